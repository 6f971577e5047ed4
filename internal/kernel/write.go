package kernel

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

// NumOps is how many WriteOps there are.
const NumOps = int(OpDeleteFDB) + 1

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
