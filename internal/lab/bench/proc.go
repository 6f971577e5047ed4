//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the tick counts in /proc (USER_HZ, 100 on every
// Linux architecture Go supports).
const userHZ = 100

// Proc reads the figures the bench takes from /proc. Root is the proc mount
// ("/proc"); tests point it at testdata.
type Proc struct {
	Root string
}

// BusyTicks returns the machine's busy CPU time so far (every CPU: user,
// nice, system, irq, softirq and steal; not idle nor iowait), in ticks.
// Network namespaces share the kernel, so this counts the whole data path:
// both pods, the bridges, the encapsulation and softirq work.
func (p Proc) BusyTicks() (uint64, error) {
	data, err := os.ReadFile(filepath.Join(p.Root, "stat"))
	if err != nil {
		return 0, fmt.Errorf("read cpu times: %w", err)
	}
	return parseBusy(data)
}

func parseBusy(data []byte) (uint64, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: first line %q is not the cpu total", line)
	}
	var busy uint64
	// user nice system idle iowait irq softirq steal [guest guest_nice]
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat field %d: %w", i+1, err)
		}
		busy += n
	}
	return busy, nil
}

// CPUSeconds converts a tick delta to seconds.
func CPUSeconds(ticks uint64) float64 { return float64(ticks) / userHZ }

// ProcessCPU returns the user+system CPU time pid used so far.
func (p Proc) ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of %d: %w", pid, err)
	}
	return parseProcessCPU(data)
}

func parseProcessCPU(data []byte) (time.Duration, error) {
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse process stat %q: no command name", data)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse process stat: %d fields", len(f)+2)
	}
	var ticks uint64
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse process stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// Memory returns pid's resident set size now and at its peak (VmRSS,
// VmHWM), in bytes.
func (p Proc) Memory(pid int) (rss, hwm int64, _ error) {
	data, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	return parseMemory(data)
}

func parseMemory(data []byte) (rss, hwm int64, _ error) {
	for line := range strings.Lines(string(data)) {
		fs := strings.Fields(line)
		if len(fs) < 2 || fs[0] != "VmRSS:" && fs[0] != "VmHWM:" {
			continue
		}
		kb, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s %w", fs[0], err)
		}
		if fs[0] == "VmRSS:" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("no VmRSS and VmHWM (exited?)")
	}
	return rss, hwm, nil
}

// RSS returns pid's resident set size in bytes (VmRSS).
func (p Proc) RSS(pid int) (int64, error) {
	f, err := os.Open(filepath.Join(p.Root, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS of %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	return 0, fmt.Errorf("no VmRSS for %d (exited?)", pid)
}
