package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"
)

// DefaultPollInterval is how often the remote is polled when Config.PollInterval is zero.
const DefaultPollInterval = 30 * time.Second

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
	Last   string
	Logger *slog.Logger // zero: discard
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
	start := time.Now()
	key, refName, err := s.resolve(ctx)
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", s.cfg.URL, err)
		s.reject(ctx, "", err)
		return "", err
	}
	if key != "" && key == s.lastKey {
		return s.last, nil
	}
	commit, err := s.fetch(ctx, refName)
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", s.cfg.URL, err)
		s.reject(ctx, "", err)
		return "", err
	}
	s.lastKey = key
	sha := commit.Hash.String()
	if sha == s.last {
		return sha, nil
	}
	s.last = sha
	fetched := time.Now()
	p, err := readCommit(commit, s.cfg.Path)
	if err == nil {
		err = p.test(ctx, s.parsed)
	}
	tested := time.Now()
	if err == nil {
		err = s.cfg.Apply(ctx, Commit{SHA: sha, Policy: p})
	}
	if err != nil {
		err = fmt.Errorf("commit %s: %w", short(sha), err)
		s.reject(ctx, sha, err)
		return sha, err
	}
	s.cfg.Logger.Info("policy commit applied", "commit", sha, "modules", len(p.Modules), "tests", len(p.Tests), "grants", len(p.Grants),
		"fetch", fetched.Sub(start), "test", tested.Sub(fetched), "apply", time.Since(tested))
	return sha, nil
}

func (s *Syncer) reject(ctx context.Context, sha string, err error) {
	if s.cfg.Reject != nil {
		s.cfg.Reject(ctx, sha, err)
	}
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

// fetch clones refName (depth 1) or, for a commit SHA, the whole history, into memory and returns the
// commit the ref names. Nothing is written to disk: the policy is read from the commit's tree.
func (s *Syncer) fetch(ctx context.Context, refName plumbing.ReferenceName) (*object.Commit, error) {
	opts := &git.CloneOptions{URL: s.cfg.URL, Auth: s.auth, Tags: git.NoTags, NoCheckout: true}
	if refName != "" {
		opts.ReferenceName, opts.SingleBranch, opts.Depth = refName, true, 1
	}
	repo, err := git.CloneContext(ctx, memory.NewStorage(), nil, opts)
	if err != nil {
		return nil, err
	}
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

// readCommit reads the policy under dir (slash-separated; "" or "." for the root) from a commit's tree,
// the way Read reads a directory. Only files count, executable or not: a symbolic link is not followed.
func readCommit(c *object.Commit, dir string) (*Policy, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", short(c.Hash.String()), err)
	}
	if dir = strings.Trim(path.Clean("/"+dir), "/"); dir != "" {
		if tree, err = tree.Tree(dir); err != nil {
			return nil, fmt.Errorf("read policy dir %s: %w", dir, err)
		}
	}
	files := map[string][]byte{}
	var unread []string
	err = tree.Files().ForEach(func(f *object.File) error {
		if isFile(f.Mode) && isUnreadData(f.Name) {
			unread = append(unread, f.Name)
		}
		if !isFile(f.Mode) || !isPolicyFile(f.Name) {
			return nil
		}
		r, err := f.Reader()
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Name, err)
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Name, err)
		}
		files[f.Name] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fromFiles(files, unread)
}
