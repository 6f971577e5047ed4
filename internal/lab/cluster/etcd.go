package cluster

import (
	"errors"
	"fmt"
)

// errNotEmbedded is returned by the etcd fault methods of a cluster whose
// etcd is a process of its own (Options.EtcdCommand) or one it attached to.
var errNotEmbedded = errors.New("the lab's etcd is not embedded in this process")

// StopEtcd stops the lab's etcd, as a crash would; with wipe its data
// directory is deleted too (a lost disk), so StartEtcd brings up an empty
// etcd whose revisions start again from 1 and that holds no network
// configuration until someone writes it.
func (c *Cluster) StopEtcd(wipe bool) error {
	if c.etcd == nil {
		return fmt.Errorf("stop etcd: %w", errNotEmbedded)
	}
	if err := c.etcd.Stop(0); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	if wipe {
		if err := c.etcd.Wipe(0); err != nil {
			return fmt.Errorf("stop etcd: %w", err)
		}
	}
	return nil
}

// StartEtcd starts the etcd StopEtcd stopped, on the same address, and
// waits until it serves.
func (c *Cluster) StartEtcd() error {
	if c.etcd == nil {
		return fmt.Errorf("start etcd: %w", errNotEmbedded)
	}
	if err := c.etcd.Restart(0); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	return nil
}
