package grant_test

import (
	"fmt"

	"github.com/kithid/kith/authz/grant"
)

func ExampleCovers() {
	dev := "spiffe://example.org/ns/dev/*"
	fmt.Println(grant.Covers(dev, "spiffe://example.org/ns/dev/sa/x"))
	fmt.Println(grant.Covers(dev, "spiffe://example.org/ns/devil/x"))
	fmt.Println(grant.Covers("spiffe://example.org/*", dev))
	// Output:
	// true
	// false
	// true
}

func ExampleMatchPath() {
	fmt.Println(grant.MatchPath("/api/*", "/api/v1/users"))
	fmt.Println(grant.MatchPath("/api/*", "/api"))
	fmt.Println(grant.MatchPath("/api/*/users", "/api/v1/users"))
	// Output:
	// true
	// false
	// true
}

func ExampleGrant_Validate() {
	g := grant.Grant{ID: "g-1", Caller: "spiffe://example.org/ns/prod/sa/web", Target: "spiffe://example.org/ns/prod/*", Methods: []string{"get"}}
	fmt.Println(g.Validate())
	// Output:
	// invalid grant g-1: method "get" must be upper-case (GET)
}

func ExampleNormalizePath() {
	for _, p := range []string{"/api/%2e%2e/admin", "//api/./v1/", "/api/..%2fadmin"} {
		n, err := grant.NormalizePath(p)
		fmt.Printf("%s -> %q %v\n", p, n, err)
	}
	// Output:
	// /api/%2e%2e/admin -> "/admin" <nil>
	// //api/./v1/ -> "/api/v1/" <nil>
	// /api/..%2fadmin -> "" path "/api/..%2fadmin": an encoded slash (%2F) or backslash (%5C) cannot be matched safely
}
