package webmailbox

import (
	_ "embed"
	"slices"
	"strings"
	"sync"
	"time"
)

// zoneList is the time zones a mailbox owner may choose: the IANA names
// of the tz database's zone.tab (one per country and region, so "Vienna"
// and "Zurich" are there and not only "Berlin") and UTC.
//
//go:embed templates/zones.txt
var zoneList string

var zones = sync.OnceValue(func() []string {
	var out []string
	for _, z := range strings.Split(zoneList, "\n") {
		if z = strings.TrimSpace(z); z != "" {
			out = append(out, z)
		}
	}
	return out
})

// validZone reports whether name is in the list.
func validZone(name string) bool {
	_, ok := slices.BinarySearch(zones(), name)
	return ok
}

// ZoneGroup is the zones of one region ("Europe") for the settings
// page's list.
type ZoneGroup struct {
	Region string
	Zones  []ZoneOption
}

// ZoneOption is one entry: the IANA name and what to show ("Berlin",
// "Argentina/Buenos Aires").
type ZoneOption struct {
	Name, Label string
}

// zoneGroups groups the list by region, in the list's order.
var zoneGroups = sync.OnceValue(func() []ZoneGroup {
	var out []ZoneGroup
	for _, z := range zones() {
		region, city, ok := strings.Cut(z, "/")
		if !ok {
			region, city = "UTC", z
		}
		if len(out) == 0 || out[len(out)-1].Region != region {
			out = append(out, ZoneGroup{Region: region})
		}
		g := &out[len(out)-1]
		g.Zones = append(g.Zones, ZoneOption{Name: z, Label: strings.ReplaceAll(city, "_", " ")})
	}
	return out
})

var locCache sync.Map // zone name → *time.Location

// loadZone returns the location of name, cached.
func loadZone(name string) (*time.Location, error) {
	if l, ok := locCache.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locCache.Store(name, l)
	return l, nil
}

// locOf is where mb's owner reads dates: the zone they chose, else the
// organisation's time_zone.
func (sv *Service) locOf(mb *Mailbox) *time.Location {
	if mb != nil && mb.TimeZone != "" {
		if l, err := loadZone(mb.TimeZone); err == nil {
			return l
		}
	}
	return sv.s.loc
}

// timeAttr writes t for a notification in loc: RFC 3339 with loc's
// offset (the notify plugin shows it in the zone named by the attribute
// "time_zone", which events carry as well).
func timeAttr(t time.Time, loc *time.Location) string {
	return t.In(loc).Format(time.RFC3339)
}
