package gitsync

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// The one loader of a policy tree, for `kith policy check` and `policy.dir` (a directory) and for Git sync
// (a commit's tree under the policy path): the same files are read the same way from both, within the same
// limits, and symbolic links are treated alike. A link whose target leaves the tree is refused, naming the
// link and its target (an outside allow-all module must not be loaded by one and ignored by the other); a
// link to a file inside the tree reads that file; hidden directories are skipped; links to directories
// are not descended.

// kind is what a tree entry is.
type kind int

const (
	regular kind = iota
	symlink
)

// entry is one file or link of a tree, by slash-separated path relative to the tree's root.
type entry struct {
	kind kind
	size int64 // a regular file's size
}

// tree is a policy directory or a commit's tree.
type tree interface {
	// entries lists the regular files and symbolic links under the root, hidden directories skipped.
	entries() (map[string]entry, error)
	// readlink returns a link's target as written.
	readlink(name string) (string, error)
	// open reads a regular file.
	open(name string) (io.ReadCloser, error)
}

// maxLinkHops bounds a chain of links inside the tree.
const maxLinkHops = 8

// load reads the policy files of t within limits; prefix ("policy/") names files by their path in the
// repository in errors.
func load(t tree, limits Limits, prefix string) (*Policy, error) {
	ents, err := t.entries()
	if err != nil {
		return nil, err
	}
	b := newBudget(limits)
	b.prefix = prefix
	files := map[string][]byte{}
	var unread []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range ents {
			if !yield(n) {
				return
			}
		}
	}) {
		e := ents[name]
		target := name
		if e.kind == symlink {
			if target, err = resolveLink(t, ents, name, prefix); err != nil {
				return nil, err
			}
			if target == "" {
				continue // a link to a directory inside the tree: not descended, as a walk does not
			}
			e = ents[target]
		}
		if isUnreadData(name) {
			unread = append(unread, name)
		}
		if !isPolicyFile(name) {
			continue
		}
		if err := b.take(name, e.size); err != nil {
			return nil, err
		}
		r, err := t.open(target)
		if err != nil {
			return nil, fmt.Errorf("read %s%s: %w", prefix, name, err)
		}
		data, err := io.ReadAll(io.LimitReader(r, e.size+1))
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s%s: %w", prefix, name, err)
		}
		if int64(len(data)) > e.size {
			return nil, fmt.Errorf("read %s%s: it grew while being read (from %d bytes)", prefix, name, e.size)
		}
		files[name] = data
	}
	return fromFiles(files, unread)
}

// resolveLink follows the link name through links inside the tree to a regular file, and returns its
// name; "" for a link to a directory inside the tree. A target outside the tree is an error naming the
// link and the target.
func resolveLink(t tree, ents map[string]entry, name, prefix string) (string, error) {
	cur := name
	for range maxLinkHops {
		target, err := t.readlink(cur)
		if err != nil {
			return "", fmt.Errorf("read link %s%s: %w", prefix, cur, err)
		}
		next := path.Clean(path.Join(path.Dir(cur), target))
		if path.IsAbs(target) || next == ".." || strings.HasPrefix(next, "../") {
			return "", fmt.Errorf("%s%s is a symbolic link to %s, outside the policy tree: refused (copy the file into the tree, or make the link point inside it)", prefix, name, target)
		}
		e, ok := ents[next]
		switch {
		case !ok:
			return "", nil // a directory (or nothing): not read
		case e.kind == regular:
			return next, nil
		}
		cur = next
	}
	return "", fmt.Errorf("%s%s: more than %d symbolic links in a row", prefix, name, maxLinkHops)
}

// dirTree is a policy directory on disk.
type dirTree struct{ root string }

func (d dirTree) entries() (map[string]entry, error) {
	out := map[string]entry{}
	err := filepath.WalkDir(d.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			if strings.HasPrefix(de.Name(), ".") && p != d.root {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case de.Type()&fs.ModeSymlink != 0:
			out[rel] = entry{kind: symlink}
		case de.Type().IsRegular():
			info, err := de.Info()
			if err != nil {
				return err
			}
			out[rel] = entry{kind: regular, size: info.Size()}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy dir %s: %w", d.root, err)
	}
	return out, nil
}

func (d dirTree) readlink(name string) (string, error) {
	t, err := os.Readlink(filepath.Join(d.root, filepath.FromSlash(name)))
	return filepath.ToSlash(t), err
}

// open opens a regular file the walk found; O_NOFOLLOW refuses it if it was swapped for a link since.
func (d dirTree) open(name string) (io.ReadCloser, error) {
	return openNoFollow(filepath.Join(d.root, filepath.FromSlash(name)))
}

// commitTree is a commit's tree under the policy path.
type commitTree struct{ t *object.Tree }

func (c commitTree) entries() (map[string]entry, error) {
	out := map[string]entry{}
	w := object.NewTreeWalker(c.t, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if hidden(name) {
			continue
		}
		switch {
		case e.Mode == filemode.Symlink:
			out[name] = entry{kind: symlink}
		case isFile(e.Mode):
			f, err := c.t.TreeEntryFile(&e)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", name, err)
			}
			out[name] = entry{kind: regular, size: f.Size}
		}
	}
}

// hidden reports whether a path is inside a hidden directory.
func hidden(name string) bool {
	dirs := strings.Split(name, "/")
	return slices.ContainsFunc(dirs[:len(dirs)-1], func(d string) bool { return strings.HasPrefix(d, ".") })
}

func (c commitTree) readlink(name string) (string, error) {
	f, err := c.t.File(name)
	if err != nil {
		return "", err
	}
	r, err := f.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	return string(b), err
}

func (c commitTree) open(name string) (io.ReadCloser, error) {
	f, err := c.t.File(name)
	if err != nil {
		return nil, err
	}
	return f.Reader()
}
