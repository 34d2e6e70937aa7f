// Package readonly has helpers for the data plane's slices, which are never modified once
// built (desired state, rendered rules): results may share memory with their inputs.
package readonly

// Filter returns the elements of in that keep accepts: in itself when it accepts them all (the
// usual case, e.g. only ready endpoints, or a single-stack Service's addresses of its family),
// otherwise a new slice (nil when it accepts none). With 10,000 Services, a copy each time
// adds up to megabytes per sync. Neither in nor the result may be modified afterwards.
func Filter[T any](in []T, keep func(T) bool) []T {
	kept := 0
	for _, e := range in {
		if keep(e) {
			kept++
		}
	}
	if kept == len(in) {
		return in
	}
	if kept == 0 {
		return nil
	}
	out := make([]T, 0, kept)
	for _, e := range in {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
