// Package federation is the server's side of the SPIFFE Trust Domain and Bundle specification: the bundle
// endpoint that serves this trust domain's bundle to federated servers (go-spiffe's federation handler,
// with ETag and If-None-Match so that frequent polls are cheap), and the refresher that fetches each
// federated trust domain's bundle from its endpoint (go-spiffe's federation.FetchBundle) by the refresh hint
// the bundle carries, keeping the last good bundle when an endpoint fails.
package federation
