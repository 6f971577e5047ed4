package reconcile

import (
	"github.com/weft-net/weft/internal/kernel"
)

// write performs ws through the kernel.Batcher when the kernel has one, else one by
// one.
func (r *Reconciler) write(ws []kernel.Write) []error {
	if b, ok := r.k.(kernel.Batcher); ok && len(ws) > 1 {
		return b.WriteBatch(ws)
	}
	errs := make([]error, len(ws))
	for i, w := range ws {
		switch w.Op {
		case kernel.OpSetFDB:
			errs[i] = r.k.SetFDB(w.FDB)
		case kernel.OpSetNeigh:
			errs[i] = r.k.SetNeigh(w.Neigh)
		case kernel.OpReplaceRoute:
			errs[i] = r.k.ReplaceRoute(w.Route)
		case kernel.OpDeleteRoute:
			errs[i] = r.k.DeleteRoute(w.Route)
		case kernel.OpDeleteNeigh:
			errs[i] = r.k.DeleteNeigh(w.Neigh)
		case kernel.OpDeleteFDB:
			errs[i] = r.k.DeleteFDB(w.FDB)
		}
	}
	return errs
}
