// Package scheme is the one runtime.Scheme Herald's binaries read and write typed objects with:
// the built-in kinds and herald.io/v1beta1. The controller's and the speaker's controller-runtime
// caches and clients, and their event recorders, are made with it. It is a package of its own so
// that config, which the allocator and its fuzz build import, does not depend on client-go.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/heraldlb/herald/config/v1beta1"
)

// New returns a scheme that knows the built-in kinds and herald.io/v1beta1.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // only on a kind registered twice: a programming error
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
