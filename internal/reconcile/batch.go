package reconcile

import "fmt"

// WriteOp is one kind of kernel write.
type WriteOp int

// Write kinds.
const (
	OpSetFDB WriteOp = iota
	OpSetNeigh
	OpReplaceRoute
	OpDeleteRoute
	OpDeleteNeigh
	OpDeleteFDB
)

// numOps is how many WriteOps there are.
const numOps = int(OpDeleteFDB) + 1

// IsDelete reports whether op removes an object.
func (op WriteOp) IsDelete() bool { return op >= OpDeleteRoute }

// Object names the kind of object op writes: route, neigh or fdb.
func (op WriteOp) Object() string {
	return [...]string{"fdb", "neigh", "route", "route", "neigh", "fdb"}[op]
}

func (op WriteOp) String() string {
	return [...]string{"set fdb", "set neighbour", "replace route", "delete route", "delete neighbour", "delete fdb"}[op]
}

// Write is one kernel write; the field matching Op is set.
type Write struct {
	Op    WriteOp
	Route Route
	Neigh Neigh
	FDB   FDB
}

func (w Write) String() string {
	switch w.Op {
	case OpReplaceRoute, OpDeleteRoute:
		return fmt.Sprintf("%s %s", w.Op, w.Route)
	case OpSetNeigh, OpDeleteNeigh:
		return fmt.Sprintf("%s %s", w.Op, w.Neigh)
	}
	return fmt.Sprintf("%s %s", w.Op, w.FDB)
}

// Batcher is an optional capability of a Kernel: many writes per system call.
// WriteBatch performs ws in order (each as idempotently as the single-object
// method) and returns one error per write.
type Batcher interface {
	WriteBatch(ws []Write) []error
}

// write performs ws through the Batcher when the kernel has one, else one by
// one.
func (r *Reconciler) write(ws []Write) []error {
	if b, ok := r.k.(Batcher); ok && len(ws) > 1 {
		return b.WriteBatch(ws)
	}
	errs := make([]error, len(ws))
	for i, w := range ws {
		switch w.Op {
		case OpSetFDB:
			errs[i] = r.k.SetFDB(w.FDB)
		case OpSetNeigh:
			errs[i] = r.k.SetNeigh(w.Neigh)
		case OpReplaceRoute:
			errs[i] = r.k.ReplaceRoute(w.Route)
		case OpDeleteRoute:
			errs[i] = r.k.DeleteRoute(w.Route)
		case OpDeleteNeigh:
			errs[i] = r.k.DeleteNeigh(w.Neigh)
		case OpDeleteFDB:
			errs[i] = r.k.DeleteFDB(w.FDB)
		}
	}
	return errs
}
