package adminapi

import (
	"sort"

	"github.com/posthorn/posthorn/mta/internal/directory"
)

func sortDomains(ds []directory.Domain) {
	sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
}
