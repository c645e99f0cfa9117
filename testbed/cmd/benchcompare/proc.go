package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat returns ppid and utime+stime, cutime+cstime (in clock ticks)
// of pid.
func procStat(pid int) (ppid int, own, children int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, 0, 0, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	cut, _ := strconv.ParseInt(f[13], 10, 64)
	cst, _ := strconv.ParseInt(f[14], 10, 64)
	return ppid, ut + st, cut + cst, true
}

// descendants returns root and every process below it.
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	kids := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, _, ok := procStat(pid); ok {
			kids[ppid] = append(kids[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

// treeCPU is the CPU time of the MTA's processes: each live one's own and
// its reaped children's (Postfix's master reaps its short-lived daemons,
// so their time lands in master's cutime/cstime).
func treeCPU(m mta) time.Duration {
	var ticks int64
	for _, pid := range m.pids() {
		if _, own, ch, ok := procStat(pid); ok {
			ticks += own + ch
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// cpuSplit divides the MTA's CPU time: the root process's system time
// (posthorn's: the kernel's share, file creation in the spool among it)
// and the time of the processes below it (posthorn's plugins).
func cpuSplit(m mta) (rootSys, below time.Duration) {
	var sys, rest int64
	for i, pid := range m.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		j := strings.LastIndexByte(s, ')')
		if j < 0 || j+2 > len(s) {
			continue
		}
		f := strings.Fields(s[j+2:])
		if len(f) < 15 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		if i == 0 {
			sys = st
		} else {
			rest += ut + st
		}
	}
	return time.Duration(sys) * time.Second / 100, time.Duration(rest) * time.Second / 100
}

// treePSS sums the PSS (KiB) of the MTA's processes.
func treePSS(m mta) float64 {
	var kib float64
	for _, pid := range m.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Pss:") {
				if f := strings.Fields(line); len(f) >= 2 {
					v, _ := strconv.ParseFloat(f[1], 64)
					kib += v
				}
				break
			}
		}
	}
	return kib
}

// selfCPU is this program's own CPU time (user + system): the load
// generator and the sink, which share the machine with the MTA.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
