package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/posthorn/posthorn/mta/internal/control"
)

// reloadMain is `posthorn reload`: the running daemon reads its config
// again (as on SIGHUP) and says what changed, or why it refused.
func reloadMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		// The daemon would refuse it the same way.
		printConfigErrors(stderr, err)
		fmt.Fprintln(stderr, "posthorn: reload refused: fix the config first; the daemon keeps the old one")
		return 1
	}
	resp, err := control.Call(cfg.Control.Socket, control.Request{Cmd: "reload"})
	if err != nil {
		fmt.Fprintln(stderr, "posthorn:", err)
		return 1
	}
	var res struct {
		Plugins  []string `json:"plugins_restarted"`
		Warnings []string `json:"warnings"`
	}
	json.Unmarshal(resp.Plugins, &res)
	fmt.Fprintln(stdout, "reloaded")
	for _, p := range res.Plugins {
		fmt.Fprintf(stdout, "plugin %s restarted\n", p)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return 0
}
