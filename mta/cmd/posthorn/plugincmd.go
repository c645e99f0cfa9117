package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posthorn/posthorn/mta/internal/control"
	"github.com/posthorn/posthorn/mta/internal/pluginhost"
)

// pluginMain is `posthorn plugin list [--json]`: each plugin's state,
// version, hooks and restart count, from the running daemon.
func pluginMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	asJSON := len(rest) == 2 && (rest[1] == "--json" || rest[1] == "-json")
	if len(rest) == 0 || rest[0] != "list" || (len(rest) > 1 && !asJSON) {
		fmt.Fprintln(stderr, "usage: posthorn plugin list [--json]")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	resp, err := control.Call(cfg.Control.Socket, control.Request{Cmd: "plugins"})
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if asJSON {
		stdout.Write(resp.Plugins)
		return 0
	}
	var st []pluginhost.PluginStatus
	if err := json.Unmarshal(resp.Plugins, &st); err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	if len(st) == 0 {
		fmt.Fprintln(stdout, "no plugins configured")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tVERSION\tHOOKS\tRESTARTS\tPID\tSINCE\tLAST ERROR")
	for _, s := range st {
		hooks := make([]string, len(s.Hooks))
		for i, h := range s.Hooks {
			hooks[i] = strings.ToLower(fmt.Sprint(h))
		}
		since := ""
		if !s.Since.IsZero() {
			since = time.Since(s.Since).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.Name, s.State, s.Version, strings.Join(hooks, ","), s.Restarts, s.Pid, since, oneLine(s.LastError, 60))
	}
	tw.Flush()
	return 0
}
