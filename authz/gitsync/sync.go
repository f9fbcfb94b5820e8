package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

// DefaultPollInterval is how often the remote is polled when Config.PollInterval is zero.
const DefaultPollInterval = 30 * time.Second

// DefaultTimeout bounds one sync (listing the remote's refs, fetching, testing and applying the commit) when
// Config.Timeout is zero.
const DefaultTimeout = time.Minute

// Commit is a policy repository commit that passed compilation and its tests.
type Commit struct {
	SHA    string
	Policy *Policy
}

// Config configures a Syncer.
type Config struct {
	URL  string // https://, ssh://, file:// or a local path (required)
	Ref  string // branch, tag, full ref or commit SHA; zero: the remote's HEAD
	Path string // sub-directory holding the policy; zero: the repository root
	// PollInterval is how often the remote is checked. Zero: DefaultPollInterval.
	PollInterval time.Duration
	// Timeout bounds one sync, so a remote that accepts a connection and never answers cannot hold the
	// syncer (and `kith policy sync`, which waits for it) forever. Zero: DefaultTimeout.
	Timeout time.Duration
	// Token authenticates https fetches (GitHub: a token with contents:read; GitLab: a deploy token).
	Token string
	// TokenUser is the user name sent with Token. Zero: "x-access-token" (GitHub; GitLab accepts "oauth2").
	TokenUser string
	// SSHKeyFile is a private key for ssh:// remotes.
	SSHKeyFile string
	// Apply receives each new commit that passed; its error rejects the commit (required).
	Apply func(ctx context.Context, c Commit) error
	// Reject is told about a commit that failed (sha is empty when the fetch itself failed). Optional.
	Reject func(ctx context.Context, sha string, err error)
	// Last is the commit already in force, if any: it is not applied again.
	Last string
	// Limits bound the policy files read from a commit; zero fields: the defaults.
	Limits Limits
	// WorkDir is where a fetch writes the repository's objects while the commit is read (a temporary
	// directory, removed after), so that large objects stay on disk. Zero: the system's temp dir.
	WorkDir string
	Logger  *slog.Logger // zero: discard
}

// Syncer follows a policy repository.
type Syncer struct {
	cfg     Config
	auth    transport.AuthMethod
	trigger chan struct{}

	mu      sync.Mutex // serialises syncs
	lastKey string     // what the ref resolved to when last fetched
	last    string     // last commit applied or rejected
	parsed  parseCache // modules of the last commit that parsed
}

// New validates cfg.
func New(cfg Config) (*Syncer, error) {
	if cfg.URL == "" {
		return nil, errors.New("gitsync: url is required")
	}
	if cfg.Apply == nil {
		return nil, errors.New("gitsync: apply is required")
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TokenUser == "" {
		cfg.TokenUser = "x-access-token"
	}
	if strings.Contains(cfg.Path, "..") {
		return nil, fmt.Errorf("gitsync: path %q must stay inside the repository", cfg.Path)
	}
	s := &Syncer{cfg: cfg, trigger: make(chan struct{}, 1), last: cfg.Last, parsed: parseCache{}}
	switch {
	case cfg.Token != "":
		s.auth = &githttp.BasicAuth{Username: cfg.TokenUser, Password: cfg.Token}
	case cfg.SSHKeyFile != "":
		k, err := gitssh.NewPublicKeysFromFile("git", cfg.SSHKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("gitsync: ssh key %s: %w", cfg.SSHKeyFile, err)
		}
		s.auth = k
	}
	return s, nil
}

// Trigger asks Run to sync now (e.g. from a webhook). It never blocks.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run syncs at once, then on every poll tick and trigger, until ctx is done.
func (s *Syncer) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		if _, err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("policy sync failed", "url", s.cfg.URL, "ref", s.cfg.Ref, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.trigger:
		}
	}
}

// Sync fetches the ref and, if it names a commit not seen before, checks and applies it. It returns the
// commit the ref names.
func (s *Syncer) Sync(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.Timeout, errTimeout)
	defer cancel()
	return s.sync(ctx)
}

// errTimeout is the cause of a sync's context ending at Config.Timeout.
var errTimeout = errors.New("sync timed out")

// sync is Sync under the lock and the timeout.
func (s *Syncer) sync(ctx context.Context) (string, error) {
	start := time.Now()
	key, refName, err := s.resolve(ctx)
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", s.cfg.URL, err)
		return "", s.reject(ctx, "", err)
	}
	if key != "" && key == s.lastKey {
		return s.last, nil
	}
	commit, done, err := s.fetch(ctx, refName)
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", s.cfg.URL, err)
		return "", s.reject(ctx, "", err)
	}
	defer done()
	s.lastKey = key
	sha := commit.Hash.String()
	if sha == s.last {
		return sha, nil
	}
	s.last = sha
	fetched := time.Now()
	p, err := readCommit(commit, s.cfg.Path, s.cfg.Limits)
	if err == nil {
		err = p.test(ctx, s.parsed)
	}
	tested := time.Now()
	if err == nil {
		err = s.cfg.Apply(ctx, Commit{SHA: sha, Policy: p})
	}
	if err != nil {
		err = fmt.Errorf("commit %s: %w", short(sha), err)
		return sha, s.reject(ctx, sha, err)
	}
	s.cfg.Logger.Info("policy commit applied", "commit", sha, "modules", len(p.Modules), "tests", len(p.Tests), "grants", len(p.Grants),
		"fetch", fetched.Sub(start), "test", tested.Sub(fetched), "apply", time.Since(tested))
	return sha, nil
}

// reject reports a failed sync. When the sync ran out of time, err is said so (it names the remote and
// the setting), and Reject gets a context of its own: the sync's has ended.
func (s *Syncer) reject(ctx context.Context, sha string, err error) error {
	if errors.Is(context.Cause(ctx), errTimeout) {
		err = fmt.Errorf("%w (the sync did not finish within policy.git.timeout %s: is %s reachable and answering?)", err, s.cfg.Timeout, s.cfg.URL)
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		ctx = c
	}
	if s.cfg.Reject != nil {
		s.cfg.Reject(ctx, sha, err)
	}
	return err
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func isSHA(ref string) bool {
	if len(ref) != 40 {
		return false
	}
	for _, c := range ref {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// resolve lists the remote's refs (cheap: no objects) and returns the hash Ref points at, used to skip
// fetching an unchanged ref, and the full ref name to clone.
func (s *Syncer) resolve(ctx context.Context) (string, plumbing.ReferenceName, error) {
	if isSHA(s.cfg.Ref) {
		return s.cfg.Ref, "", nil
	}
	rem := git.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: "origin", URLs: []string{s.cfg.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: s.auth})
	if err != nil {
		return "", "", err
	}
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, r := range refs {
		byName[r.Name()] = r
	}
	var candidates []plumbing.ReferenceName
	switch {
	case s.cfg.Ref == "":
		candidates = []plumbing.ReferenceName{plumbing.HEAD}
	case strings.HasPrefix(s.cfg.Ref, "refs/"):
		candidates = []plumbing.ReferenceName{plumbing.ReferenceName(s.cfg.Ref)}
	default:
		candidates = []plumbing.ReferenceName{plumbing.NewBranchReferenceName(s.cfg.Ref), plumbing.NewTagReferenceName(s.cfg.Ref)}
	}
	for _, name := range candidates {
		r, ok := byName[name]
		if !ok {
			continue
		}
		if r.Type() == plumbing.SymbolicReference {
			target, ok := byName[r.Target()]
			if !ok {
				return "", "", fmt.Errorf("ref %s points at missing %s", name, r.Target())
			}
			return target.Hash().String(), target.Name(), nil
		}
		return r.Hash().String(), name, nil
	}
	return "", "", fmt.Errorf("ref %q not found on the remote: give a branch, tag or commit SHA", s.cfg.Ref)
}

// largeObject is the size above which an object of a fetched repository is read from disk as it is
// used instead of being loaded whole: the blobs outside the policy path are never read at all.
const largeObject = 64 << 10

// fetch clones refName (depth 1, that branch or tag only, no tags) or, for a commit SHA, the whole history,
// and returns the commit the ref names; done removes what the fetch wrote. go-git fetches whole trees:
// it has no partial clone (--filter=blob:none) and no sparse fetch, so the pack holds every blob of the
// commit, the ones outside the policy path too. The pack is therefore written to a temporary directory,
// not kept in memory, and objects larger than largeObject are read from it only when used; the commit's
// tree is then read under the policy path alone (readCommit). Nothing is checked out.
func (s *Syncer) fetch(ctx context.Context, refName plumbing.ReferenceName) (c *object.Commit, done func(), err error) {
	dir, err := os.MkdirTemp(s.cfg.WorkDir, "kith-policy-fetch-")
	if err != nil {
		return nil, nil, fmt.Errorf("work dir: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	st := filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(cache.MiByte), filesystem.Options{LargeObjectThreshold: largeObject})
	opts := &git.CloneOptions{URL: s.cfg.URL, Auth: s.auth, Tags: git.NoTags, NoCheckout: true}
	if refName != "" {
		opts.ReferenceName, opts.SingleBranch, opts.Depth = refName, true, 1
	}
	repo, err := s.cloneAtMost(ctx, dir, st, opts)
	if err != nil {
		return nil, nil, err
	}
	c, err = s.commitOf(repo, refName)
	return c, cleanup, err
}

// fetchWatch is how often a fetch's size on disk is checked against Limits.MaxFetchBytes.
const fetchWatch = 20 * time.Millisecond

// cloneAtMost clones into st (on disk in dir), stopping the clone once dir holds more than
// Limits.MaxFetchBytes: a repository that large is not a policy repository, and go-git holds each object
// of the pack in memory while it indexes it.
func (s *Syncer) cloneAtMost(ctx context.Context, dir string, st *filesystem.Storage, opts *git.CloneOptions) (*git.Repository, error) {
	max := s.cfg.Limits.withDefaults().MaxFetchBytes
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tooBig := fmt.Errorf("the fetch passed %d bytes (policy.git.max_fetch_bytes): go-git fetches every file of the commit, not only the policy path, so keep large files out of the policy repository or raise the limit", max)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		t := time.NewTicker(fetchWatch)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if dirSize(dir) > max {
				cancel(tooBig)
				return
			}
		}
	}()
	repo, err := git.CloneContext(ctx, st, nil, opts)
	cancel(nil)
	<-watching
	if errors.Is(context.Cause(ctx), tooBig) {
		return nil, tooBig
	}
	if err == nil && dirSize(dir) > max {
		return nil, tooBig // fetched between two looks
	}
	return repo, err
}

// dirSize is the bytes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// commitOf returns the commit refName (or, when empty, the configured commit SHA) names in repo.
func (s *Syncer) commitOf(repo *git.Repository, refName plumbing.ReferenceName) (*object.Commit, error) {
	hash := plumbing.NewHash(s.cfg.Ref)
	if refName != "" {
		head, err := repo.Head()
		if err != nil {
			return nil, err
		}
		hash = head.Hash()
	}
	if tag, err := repo.TagObject(hash); err == nil {
		c, err := tag.Commit()
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag.Name, err)
		}
		return c, nil
	}
	c, err := repo.CommitObject(hash)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", short(hash.String()), err)
	}
	return c, nil
}

// isFile reports whether a tree entry is a file's content (100644, or 100755 for an executable one, or the
// old group-writable 100664), not a symbolic link or submodule.
func isFile(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

// readCommit reads the policy under dir (slash-separated; "" or "." for the root) from a commit's tree
// with the loader Read uses (load), within limits. Only trees under dir and the policy files' blobs are
// read; each blob's size is checked before its content is.
func readCommit(c *object.Commit, dir string, limits Limits) (*Policy, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", short(c.Hash.String()), err)
	}
	if dir = strings.Trim(path.Clean("/"+dir), "/"); dir != "" {
		if tree, err = tree.Tree(dir); err != nil {
			return nil, fmt.Errorf("read policy dir %s: %w", dir, err)
		}
	}
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	return load(commitTree{t: tree}, limits, prefix)
}
