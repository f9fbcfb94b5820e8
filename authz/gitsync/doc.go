// Package gitsync turns commits of a policy repository into Kith policy: it fetches a Git remote with
// go-git into memory (poll or webhook trigger; nothing is checked out on disk), reads the Rego modules,
// their *_test.rego tests and the optional data.json/data.yaml static grants under a sub-directory of the
// commit's tree, compiles the modules with the built-in policy,
// runs the repository's tests with OPA's test runner, and hands a commit that passes to the server, which
// validates it once more, signs a bundle and pushes it to agents. A commit that fails is rejected with an
// error naming file and line; the last good policy stays.
//
// Check runs the same validation on a local directory, for CI (`kith policy check DIR`).
package gitsync
