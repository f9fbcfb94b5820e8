package authz_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kithid/kith/authz"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func ExampleEngine_Decide() {
	ctx := context.Background()
	e, err := authz.New(authz.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = e.PutGrant(ctx, authz.Grant{
		ID:      "g-1",
		Caller:  "spiffe://example.org/ns/prod/sa/frontend",
		Target:  "spiffe://example.org/ns/prod/sa/payments",
		Methods: []string{"GET"},
		Paths:   []string{"/api/*"},
		Source:  "cli",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, req := range []struct{ method, path string }{{"GET", "/api/v1/users"}, {"DELETE", "/api/v1/users"}} {
		d, err := e.Decide(ctx, authz.Input{
			Caller: spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/frontend"),
			Target: spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/payments"),
			Method: req.method,
			Path:   req.path,
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(req.method, req.path, "allowed:", d.Allowed)
		for _, r := range d.Reasons {
			fmt.Println("  ", r)
		}
	}
	// Output:
	// GET /api/v1/users allowed: true
	//    grant g-1 allows spiffe://example.org/ns/prod/sa/frontend → spiffe://example.org/ns/prod/sa/payments GET /api/*
	// DELETE /api/v1/users allowed: false
	//    no grant allows spiffe://example.org/ns/prod/sa/frontend to call spiffe://example.org/ns/prod/sa/payments (DELETE /api/v1/users)
	//    grant g-1 does not allow method DELETE
}
