// goref runs Go's reference implementations of signed notes and Merkle trees
// (golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog) for kvreceipts' tests:
// it reads a JSON array of requests on stdin and writes a JSON array of answers, one per
// request. Hashes and leaf data are hex; an answer is {"ok": ...} or {"err": "..."}.
//
// Built by tests/test_proofs_go.py in GOPATH mode against Debian's packaged sources:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o goref tests/go/goref.go
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Op string `json:"op"`
	// tree: the records (hex), the sizes whose roots are wanted, inclusion and consistency
	// proofs to make.
	Leaves      []string   `json:"leaves"`
	Sizes       []int64    `json:"sizes"`
	Inclusion   [][2]int64 `json:"inclusion"`   // [index, size]
	Consistency [][2]int64 `json:"consistency"` // [old, new]
	// check_record / check_tree
	Proof    []string `json:"proof"`
	Size     int64    `json:"size"`
	Root     string   `json:"root"`
	Index    int64    `json:"index"`
	LeafData string   `json:"leaf_data"`
	Old      int64    `json:"old"`
	OldRoot  string   `json:"old_root"`
	// keys and notes
	Name  string   `json:"name"`
	Vkey  string   `json:"vkey"`
	Vkeys []string `json:"vkeys"`
	Skey  string   `json:"skey"`
	Text  string   `json:"text"`
	Note  string   `json:"note"`
}

type answer struct {
	OK  interface{} `json:"ok,omitempty"`
	Err string      `json:"err,omitempty"`
}

func hash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := hash(s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func hexes(list []tlog.Hash) []string {
	out := make([]string, len(list))
	for i, h := range list {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

// tree stores the records' hashes as tlog's servers do, then asks tlog for roots and proofs.
func tree(r request) (interface{}, error) {
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, errors.New("hash index out of range")
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, leaf := range r.Leaves {
		data, err := hex.DecodeString(leaf)
		if err != nil {
			return nil, err
		}
		more, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			return nil, err
		}
		stored = append(stored, more...)
	}
	roots := make([]string, len(r.Sizes))
	for i, n := range r.Sizes {
		h, err := tlog.TreeHash(n, reader)
		if err != nil {
			return nil, err
		}
		roots[i] = hex.EncodeToString(h[:])
	}
	inclusion := make([][]string, len(r.Inclusion))
	for i, q := range r.Inclusion {
		p, err := tlog.ProveRecord(q[1], q[0], reader)
		if err != nil {
			return nil, err
		}
		inclusion[i] = hexes(p)
	}
	consistency := make([][]string, len(r.Consistency))
	for i, q := range r.Consistency {
		p, err := tlog.ProveTree(q[1], q[0], reader)
		if err != nil {
			return nil, err
		}
		consistency[i] = hexes(p)
	}
	return map[string]interface{}{"roots": roots, "inclusion": inclusion, "consistency": consistency}, nil
}

func checkRecord(r request) (interface{}, error) {
	p, err := hashes(r.Proof)
	if err != nil {
		return nil, err
	}
	root, err := hash(r.Root)
	if err != nil {
		return nil, err
	}
	data, err := hex.DecodeString(r.LeafData)
	if err != nil {
		return nil, err
	}
	if err := tlog.CheckRecord(p, r.Size, root, r.Index, tlog.RecordHash(data)); err != nil {
		return nil, err
	}
	return true, nil
}

func checkTree(r request) (interface{}, error) {
	p, err := hashes(r.Proof)
	if err != nil {
		return nil, err
	}
	root, err := hash(r.Root)
	if err != nil {
		return nil, err
	}
	old, err := hash(r.OldRoot)
	if err != nil {
		return nil, err
	}
	if err := tlog.CheckTree(p, r.Size, root, r.Old, old); err != nil {
		return nil, err
	}
	return true, nil
}

func open(r request) (interface{}, error) {
	var list []note.Verifier
	for _, k := range r.Vkeys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	n, err := note.Open([]byte(r.Note), note.VerifierList(list...))
	if err != nil {
		return nil, err
	}
	var sigs []string
	for _, s := range n.Sigs {
		sigs = append(sigs, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return map[string]interface{}{"text": n.Text, "sigs": sigs}, nil
}

func run(r request) (interface{}, error) {
	switch r.Op {
	case "tree":
		return tree(r)
	case "check_record":
		return checkRecord(r)
	case "check_tree":
		return checkTree(r)
	case "verifier":
		v, err := note.NewVerifier(r.Vkey)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()), nil
	case "signer":
		s, err := note.NewSigner(r.Skey)
		if err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s+%08x", s.Name(), s.KeyHash()), nil
	case "generate":
		skey, vkey, err := note.GenerateKey(rand.Reader, r.Name)
		if err != nil {
			return nil, err
		}
		return []string{skey, vkey}, nil
	case "sign":
		s, err := note.NewSigner(r.Skey)
		if err != nil {
			return nil, err
		}
		msg, err := note.Sign(&note.Note{Text: r.Text}, s)
		if err != nil {
			return nil, err
		}
		return string(msg), nil
	case "open":
		return open(r)
	case "format_tree":
		root, err := hash(r.Root)
		if err != nil {
			return nil, err
		}
		return string(tlog.FormatTree(tlog.Tree{N: r.Size, Hash: root})), nil
	case "parse_tree":
		t, err := tlog.ParseTree([]byte(r.Text))
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"size": t.N, "root": hex.EncodeToString(t.Hash[:])}, nil
	}
	return nil, fmt.Errorf("unknown op %q", r.Op)
}

func main() {
	var requests []request
	if err := json.NewDecoder(os.Stdin).Decode(&requests); err != nil {
		fmt.Fprintln(os.Stderr, "goref:", err)
		os.Exit(2)
	}
	answers := make([]answer, len(requests))
	for i, r := range requests {
		ok, err := run(r)
		if err != nil {
			answers[i] = answer{Err: err.Error()}
		} else {
			answers[i] = answer{OK: ok}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(answers); err != nil {
		fmt.Fprintln(os.Stderr, "goref:", err)
		os.Exit(2)
	}
}
