package store

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"github.com/subrole/subrole"
)

// maxGroup caps how many Updates share one transaction.
const maxGroup = 1000

// The states of a request. The caller and the commit loop race to move a
// pending request: the loop to started just before it first calls fn, the
// caller to cancelled when its context ends. Whoever wins decides the answer.
const (
	pending   int32 = iota // queued; fn has not been called
	started                // fn has been called: the caller waits for the outcome
	cancelled              // the caller gave up first: fn is never called
)

// request is one Update waiting for the commit loop.
type request struct {
	fn    func(subrole.Tx) error
	state atomic.Int32
	done  chan error // buffered, so the loop never blocks on an answer
}

// start reports whether fn may be called, marking r started if it was pending.
func (r *request) start() bool {
	return r.state.Load() == started || r.state.CompareAndSwap(pending, started)
}

// Update runs fn in a read-write transaction and commits it. The change is on
// disk when Update returns nil. If fn returns an error, nothing it did is kept
// and Update returns that error unchanged. A panic in fn is recovered and
// returned as an error that carries the panic value and stack.
//
// Concurrent Updates share transactions: a single goroutine commits them,
// and whenever it is free it takes every Update that is waiting (up to 1000)
// and runs their fns one after another in one transaction with one fsync.
// There is no timer, so a lone Update is committed at once, and groups grow
// by themselves under load. As with bbolt's DB.Batch, when one fn fails the
// transaction is rolled back, the others are run again without it, and the
// failing fn is then run again alone so that its error is its own. So fn may
// be called more than once, and must act only through the Tx.
//
// If ctx ends before fn has been called, Update returns ctx.Err() and fn is
// never called. Once fn has been called, Update waits for the outcome whatever
// ctx does: it never reports an error for a committed change, nor success for
// one that was not committed. Once Close has begun, Update returns ErrClosed.
func (s *Store) Update(ctx context.Context, fn func(subrole.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inflight.Done()
	r := &request{fn: fn, done: make(chan error, 1)}
	select {
	case s.requests <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(pending, cancelled) {
			return ctx.Err()
		}
		return <-r.done // fn has been called: its outcome is the answer
	}
}

// loop is the commit loop. Each time it is free, it commits the next request
// together with every request already waiting. It runs until Close, which
// stops it only once no Update is in progress.
func (s *Store) loop() {
	defer close(s.stopped)
	for {
		select {
		case r := <-s.requests:
			s.commitGroup(s.gather(r))
		case <-s.stop:
			return
		}
	}
}

// gather returns first followed by every request already waiting to be sent,
// up to maxGroup. It never waits.
func (s *Store) gather(first *request) []*request {
	group := []*request{first}
	for len(group) < maxGroup {
		select {
		case r := <-s.requests:
			group = append(group, r)
		default:
			return group
		}
	}
	return group
}

// commitGroup runs the fns of group in one transaction and answers every
// caller. When a fn fails, the transaction is rolled back and the rest of
// the group runs again without it. A fn that failed after other fns had
// written in the same transaction may have failed because of their writes,
// so it is run again alone, after the group, before its caller is answered.
// A fn that failed first in its transaction saw only committed state, as it
// would alone, so its error is final.
func (s *Store) commitGroup(group []*request) {
	var alone []*request
	for len(group) > 0 {
		i, err := s.runTx(group)
		if i < 0 {
			for _, r := range group {
				r.done <- err
			}
			break
		}
		failed := group[i]
		if slices.ContainsFunc(group[:i], (*request).hasStarted) {
			alone = append(alone, failed)
		} else {
			failed.done <- err
		}
		group = slices.Concat(group[:i], group[i+1:]) // a copy: the caller's slice is left alone
	}
	for _, r := range alone {
		_, err := s.runTx([]*request{r})
		r.done <- err
	}
}

// hasStarted reports whether fn has been called.
func (r *request) hasStarted() bool { return r.state.Load() == started }

// runTx calls the fns of group in order in one read-write transaction,
// skipping cancelled requests. If they all succeed, it commits and returns
// -1 and the commit's error. If one fails, it rolls back and returns that
// fn's index and error.
func (s *Store) runTx(group []*request) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	btx, err := s.db.Begin(true)
	if err != nil {
		return -1, fmt.Errorf("store: begin update: %w", err)
	}
	t := &tx{tx: btx, seen: &s.seen}
	ran := false
	for i, r := range group {
		if !r.start() {
			continue
		}
		ran = true
		if err := call(r.fn, t); err != nil {
			btx.Rollback()
			return i, err
		}
	}
	if !ran { // every caller gave up: nothing to commit
		btx.Rollback()
		return -1, nil
	}
	if err := btx.Commit(); err != nil {
		// The file may or may not hold the transaction now: believe it,
		// not this transaction's changes.
		if rerr := s.db.View(s.seen.load); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return -1, fmt.Errorf("store: commit: %w", err)
	}
	s.seen.apply(t.seenChanges)
	s.commits.Add(1)
	if t.audited {
		select { // the dashboard's feed reads the entries itself; never wait for it
		case s.audited <- struct{}{}:
		default:
		}
	}
	return -1, nil
}

// call calls fn, turning a panic into an error so that the commit loop
// survives it.
func call(fn func(subrole.Tx) error, t *tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("store: update function panicked: %v\n%s", v, debug.Stack())
		}
	}()
	return fn(t)
}
