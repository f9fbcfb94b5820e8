package extauthz

// growStack makes the calling goroutine's stack at least about 64 KiB in
// one step. gRPC runs each call on a fresh goroutine with a small stack, and
// OPA's evaluation is deeply recursive: without this the stack is doubled
// and copied several times per check, which profiles showed costing about
// a third of the server's CPU.
//
// The stack grows in the function's prologue, which checks room for its
// whole frame; the pad in that frame is only used (and so only zeroed) when
// never is true, which it is not: the growth costs no clearing of 64 KiB.
//
//go:noinline
func growStack() byte {
	if never {
		var pad [64 << 10]byte
		return touch(&pad)
	}
	return 0
}

// never is false; the compiler cannot know it.
var never bool

//go:noinline
func touch(p *[64 << 10]byte) byte { return p[len(p)-1] }
