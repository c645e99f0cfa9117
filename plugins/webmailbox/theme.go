package webmailbox

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"text/template"

	"github.com/posthorn/posthorn/sdk"
)

// theme is the operator's look: name, logo, colour, contact and links.
type theme struct {
	logo, logoType                string
	logoData                      []byte
	primary                       string // "#rrggbb"
	support, imprint, privacy     string
	css                           []byte // style.css with the colour filled in
	primaryDark, primaryLightTint string
}

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

const defaultPrimary = "#1d3557"

func (c *Config) theme(dataDir string) (theme, error) {
	th := theme{primary: defaultPrimary, support: c.SupportContact, imprint: c.ImprintURL, privacy: c.PrivacyURL}
	if c.PrimaryColor != "" {
		if !hexColor.MatchString(c.PrimaryColor) {
			return th, &sdk.ConfigError{Key: "primary_color", Message: fmt.Sprintf("%q: want \"#rrggbb\"", c.PrimaryColor)}
		}
		if r := contrast(c.PrimaryColor, "#ffffff"); r < 4.5 {
			return th, &sdk.ConfigError{Key: "primary_color", Message: fmt.Sprintf("%s: white text on it has a contrast of %.1f:1; WCAG AA needs 4.5:1 — choose a darker colour", c.PrimaryColor, r)}
		}
		th.primary = c.PrimaryColor
	}
	for key, v := range map[string]string{"imprint_url": c.ImprintURL, "privacy_url": c.PrivacyURL} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return th, &sdk.ConfigError{Key: key, Message: fmt.Sprintf("%q is not an absolute http(s) URL", v)}
		}
	}
	if c.LogoFile != "" {
		p := c.LogoFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dataDir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return th, &sdk.ConfigError{Key: "logo_file", Message: err.Error()}
		}
		if len(b) > 256<<10 {
			return th, &sdk.ConfigError{Key: "logo_file", Message: "larger than 256 KiB"}
		}
		ct := http.DetectContentType(b)
		if bytes.Contains(b[:min(len(b), 512)], []byte("<svg")) {
			ct = "image/svg+xml"
		}
		switch ct {
		case "image/png", "image/jpeg", "image/svg+xml":
		default:
			return th, &sdk.ConfigError{Key: "logo_file", Message: fmt.Sprintf("%s is %s; want PNG, JPEG or SVG", p, ct)}
		}
		th.logo, th.logoType, th.logoData = p, ct, b
	}
	th.primaryDark = shade(th.primary, 0.75)
	th.primaryLightTint = tint(th.primary, 0.9)
	var buf bytes.Buffer
	if err := cssTemplate.Execute(&buf, map[string]string{"Primary": th.primary, "PrimaryDark": th.primaryDark, "Tint": th.primaryLightTint}); err != nil {
		return th, err
	}
	th.css = buf.Bytes()
	return th, nil
}

var cssTemplate = template.Must(template.New("css").Parse(string(mustAsset("templates/style.css"))))

func mustAsset(name string) []byte {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

func rgb(hex string) (r, g, b float64) {
	v, _ := strconv.ParseUint(hex[1:], 16, 32)
	return float64(v >> 16 & 0xff), float64(v >> 8 & 0xff), float64(v & 0xff)
}

func luminance(hex string) float64 {
	lin := func(c float64) float64 {
		c /= 255
		if c <= 0.03928 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	r, g, b := rgb(hex)
	return 0.2126*lin(r) + 0.7152*lin(g) + 0.0722*lin(b)
}

// contrast is the WCAG contrast ratio of two colours.
func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func shade(hex string, f float64) string {
	r, g, b := rgb(hex)
	return fmt.Sprintf("#%02x%02x%02x", int(r*f), int(g*f), int(b*f))
}

func tint(hex string, f float64) string {
	r, g, b := rgb(hex)
	m := func(c float64) int { return int(c + (255-c)*f) }
	return fmt.Sprintf("#%02x%02x%02x", m(r), m(g), m(b))
}
