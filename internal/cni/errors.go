package cni

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"
)

// codedError attaches a CNI error code to an error chain.
type codedError struct {
	code uint
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withCode marks err with a CNI error code; the outermost code wins.
func withCode(code uint, err error) error {
	return &codedError{code: code, err: err}
}

// ToCNIError maps any error from the plugin to the CNI error JSON the runtime
// reads: the message is the whole chain (so the context is kept), the code is
// the outermost one attached by withCode, else the delegate's own code when
// the failure came from a delegate, else ErrInternal.
func ToCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return &types.Error{Code: ce.code, Msg: err.Error()}
	}
	var cfg *configError
	if errors.As(err, &cfg) {
		return &types.Error{Code: types.ErrInvalidNetworkConfig, Msg: err.Error()}
	}
	var te *types.Error
	if errors.As(err, &te) {
		return &types.Error{Code: te.Code, Msg: err.Error()}
	}
	return &types.Error{Code: types.ErrInternal, Msg: err.Error()}
}
