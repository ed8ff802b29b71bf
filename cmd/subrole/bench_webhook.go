package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
	bolt "go.etcd.io/bbolt"
)

// This file is the webhook benchmark of issue 2: the service's ack path
// beside two baselines, served the same way over loopback HTTP.

// The webhook targets.
const (
	targetMemory  = "memory"  // verify, parse, 204: the ceiling
	targetBatch   = "batch"   // verify, parse, db.Batch append with default settings, 204
	targetService = "service" // the real path: Service.AcceptEvent through the commit loop, core running
	// targetNoCore is the service's ack path with the core stopped (events
	// pile up in the inbox): a diagnostic that shows what the core's own
	// commits cost the webhook. Not part of the default comparison.
	targetNoCore = "service-nocore"
)

var webhookTargets = []string{targetMemory, targetBatch, targetService}

// webhookServer is one target listening on loopback.
type webhookServer struct {
	url  string
	stop func() error
	// commits returns the id of the target's newest read-write
	// transaction (0 when it has none): the difference between two calls is
	// how many commits happened between them.
	commits func() uint64
}

// nopSink accepts every event without storing it.
type nopSink struct{}

// AcceptEvent accepts e without storing it.
func (nopSink) AcceptEvent(context.Context, subrole.Event) (bool, error) { return false, nil }

// RecordRevocation accepts a revocation without storing it.
func (nopSink) RecordRevocation(context.Context, string, subrole.Revocation) (bool, error) {
	return false, nil
}

// batchSink is the naive durable appender: bbolt's DB.Batch with its
// default settings (at most 1000 calls per batch, 10 ms timer), the same
// work as the service's AcceptEvent: dedupe by message id, mark it seen,
// append the event as JSON.
type batchSink struct{ db *bolt.DB }

var (
	batchSeen  = []byte("seen")
	batchInbox = []byte("inbox")
)

// AcceptEvent deduplicates and appends e in a db.Batch transaction.
func (s batchSink) AcceptEvent(_ context.Context, e subrole.Event) (bool, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	var dup bool
	err = s.db.Batch(func(tx *bolt.Tx) error {
		seen, inbox := tx.Bucket(batchSeen), tx.Bucket(batchInbox)
		if dup = seen.Get([]byte(e.MessageID)) != nil; dup {
			return nil
		}
		if err := seen.Put([]byte(e.MessageID), binary.BigEndian.AppendUint64(nil, uint64(e.Received.UnixNano()))); err != nil {
			return err
		}
		seq, err := inbox.NextSequence()
		if err != nil {
			return err
		}
		return inbox.Put(binary.BigEndian.AppendUint64(nil, seq), data)
	})
	return dup, err
}

// RecordRevocation is not part of the benchmark and always fails.
func (s batchSink) RecordRevocation(context.Context, string, subrole.Revocation) (bool, error) {
	return false, errors.New("bench: the batch baseline does not record revocations")
}

// startWebhookTarget starts target on 127.0.0.1:0 with its files in dir.
func startWebhookTarget(target, dir string) (*webhookServer, error) {
	var (
		sink    eventsub.Sink
		closers []func() error
		commits = func() uint64 { return 0 }
	)
	switch target {
	case targetMemory:
		sink = nopSink{}
	case targetBatch:
		db, err := bolt.Open(filepath.Join(dir, "batch.db"), 0o600, nil)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{batchSeen, batchInbox} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("bench: %w", err)
		}
		sink = batchSink{db: db}
		closers = append(closers, db.Close)
		commits = func() uint64 { return lastTxID(db) }
	case targetService, targetNoCore:
		db, err := store.Open(filepath.Join(dir, "service.db"), store.Options{})
		if err != nil {
			return nil, err
		}
		svc := subrole.NewService(subrole.Config{Store: db, Policy: worldPolicy()})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		if target == targetService {
			go func() { svc.Run(ctx); close(done) }()
		} else {
			close(done)
		}
		closers = append(closers, func() error { cancel(); <-done; return db.Close() })
		sink = svc
		commits = func() uint64 { return lastTxID(db.Bolt()) }
	default:
		return nil, fmt.Errorf("bench: unknown webhook target %q", target)
	}
	h := &eventsub.Handler{Secret: worldEventSubToken, BroadcasterID: twitchtest.DefaultBroadcasterID, Sink: sink}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/twitch_eventsub", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
	go srv.Serve(ln)
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
		return err
	}
	return &webhookServer{url: "http://" + ln.Addr().String() + "/twitch_eventsub", stop: stop, commits: commits}, nil
}

// lastTxID returns the id of the newest committed transaction; bbolt
// numbers read-write transactions one by one.
func lastTxID(db *bolt.DB) uint64 {
	var id int
	db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return uint64(id)
}

// worldPolicy is the world's role policy.
func worldPolicy() subrole.Policy {
	return subrole.Policy{Linked: worldRoleLinked, Tier1: worldRoleTier1, Tier2: worldRoleTier2,
		Tier3: worldRoleTier3, Subscriber: worldRoleSub}
}

// prebuilt returns n signed channel.subscribe notifications for url, for
// distinct users from first on, so that building and signing them is not
// measured.
func prebuilt(url string, first, n int) []twitchtest.Message {
	s := &twitchtest.Sender{Callback: url, Secret: worldEventSubToken}
	tiers := []string{"1000", "2000", "3000"}
	out := make([]twitchtest.Message, n)
	for i := range out {
		u := first + i
		out[i] = s.Subscribe(twitchID(u), "viewer"+strconv.Itoa(u), tiers[u%3], u%7 == 0)
	}
	return out
}

// webhookRun measures one target at one concurrency, closed loop for
// duration (or count events), or open loop at rate.
type webhookRun struct {
	target   string
	conns    int
	rate     float64
	duration time.Duration
	count    int
}

// webhookOutcome is what one webhookRun measured.
type webhookOutcome struct {
	res         loadResult
	perCommit   float64 // acknowledged events per commit (the service's count includes the core's own commits)
	lat         latencies
	ackedPerSec float64
}

// measureWebhook starts the target, sends prebuilt notifications and stops it.
func measureWebhook(ctx context.Context, dir string, r webhookRun) (webhookOutcome, error) {
	sub, err := os.MkdirTemp(dir, r.target+"-")
	if err != nil {
		return webhookOutcome{}, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(sub)
	srv, err := startWebhookTarget(r.target, sub)
	if err != nil {
		return webhookOutcome{}, err
	}
	// Enough messages for the fastest target; a closed-loop run that uses
	// them all ends early, which only shortens it.
	n := r.count
	if n == 0 {
		perSec := 30000.0
		if r.rate > 0 {
			perSec = r.rate * 1.1
		}
		n = int(perSec*r.duration.Seconds()) + 1000
	}
	msgs := prebuilt(srv.url, 1, n)
	var next atomicCounter
	client := newLoadClient(r.conns)
	// Warm up: open the connections and fault in the code paths.
	warm := prebuilt(srv.url, n+1, r.conns*4)
	var wn atomicCounter
	runLoad(ctx, client, srv.url, loadSpec{Conns: r.conns, Count: len(warm)}, func() (twitchtest.Message, bool, bool) {
		i := wn.next()
		return warm[i], false, i < len(warm)
	}, nil)
	c0 := srv.commits()
	res := runLoad(ctx, client, srv.url, loadSpec{Conns: r.conns, Rate: r.rate, Duration: r.duration, Count: r.count},
		func() (twitchtest.Message, bool, bool) {
			i := next.next()
			if i >= len(msgs) {
				return twitchtest.Message{}, false, false
			}
			return msgs[i], false, true
		}, nil)
	commits := srv.commits() - c0
	client.CloseIdleConnections()
	if err := srv.stop(); err != nil {
		return webhookOutcome{}, err
	}
	out := webhookOutcome{res: res, lat: res.ackLatencies(time.Time{}, time.Time{}).sorted(), ackedPerSec: res.rate()}
	if commits > 0 {
		out.perCommit = float64(res.Acked) / float64(commits)
	}
	if len(res.Errors) > 0 {
		return out, fmt.Errorf("bench: %s at %d connections: errors: %s", r.target, r.conns, res.errorSummary())
	}
	return out, nil
}

// atomicCounter hands out 0, 1, 2, ... to concurrent callers.
type atomicCounter struct{ n atomic.Int64 }

// next returns the next number.
func (c *atomicCounter) next() int { return int(c.n.Add(1) - 1) }

// benchWebhookCmd is "subrole bench webhook".
func benchWebhookCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("webhook", stderr)
	concs := fs.String("conc", "1,16,64", "concurrencies (connections) to compare at")
	targetsFlag := fs.String("targets", strings.Join(webhookTargets, ","), "handlers to compare: memory, batch, service (and the diagnostic service-nocore)")
	duration := fs.Duration("duration", 5*time.Second, "closed-loop time per target and concurrency")
	steadyRate := fs.Float64("steady-rate", 1000, "open-loop rate of the steady run (0 skips it)")
	steadyDur := fs.Duration("steady-duration", 10*time.Second, "length of the steady run per target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var conns []int
	for s := range strings.SplitSeq(*concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bench webhook: -conc: %q is not a positive number", s)
		}
		conns = append(conns, n)
	}
	targets := strings.Split(*targetsFlag, ",")
	for _, t := range targets {
		if !slices.Contains(append(webhookTargets, targetNoCore), t) {
			return fmt.Errorf("bench webhook: -targets: unknown handler %q", t)
		}
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	fsyncP50, commitP50, err := measureFsync(dir, 200)
	if err != nil {
		return err
	}
	cmd := "subrole bench webhook " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, "webhook: ack throughput and latency, three handlers over loopback HTTP", cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			var m metrics
			if run == 0 {
				m.addMs("reference: one fsync (4 KiB write) p50", fsyncP50)
				m.addMs("reference: one bbolt commit p50", commitP50)
			}
			for _, c := range conns {
				got := map[string]webhookOutcome{}
				// Interleave the targets so that drift on a shared machine
				// hits all three alike.
				for _, t := range targets {
					o, err := measureWebhook(ctx, dir, webhookRun{target: t, conns: c, duration: *duration})
					if err != nil {
						return nil, err
					}
					got[t] = o
				}
				for _, t := range targets {
					o := got[t]
					p := fmt.Sprintf("c=%d %s ", c, t)
					m.add(p+"acks/s", o.ackedPerSec, "1/s")
					m.addMs(p+"p50", o.lat.pct(50))
					m.addMs(p+"p99", o.lat.pct(99))
					if o.perCommit > 0 {
						m.add(p+"events/commit", o.perCommit, "")
					}
				}
				if s, b, mem := got[targetService], got[targetBatch], got[targetMemory]; s.ackedPerSec > 0 && b.ackedPerSec > 0 && mem.ackedPerSec > 0 {
					m.add(fmt.Sprintf("c=%d ratio service/batch", c), s.ackedPerSec/b.ackedPerSec, "x")
					m.add(fmt.Sprintf("c=%d ratio service/memory", c), s.ackedPerSec/mem.ackedPerSec, "x")
				}
			}
			if *steadyRate > 0 {
				for _, t := range targets {
					o, err := measureWebhook(ctx, dir, webhookRun{target: t, conns: 64, rate: *steadyRate, duration: *steadyDur})
					if err != nil {
						return nil, err
					}
					p := fmt.Sprintf("%.0f/s %s ", *steadyRate, t)
					m.add(p+"acks/s", o.ackedPerSec, "1/s")
					m.addMs(p+"p50", o.lat.pct(50))
					m.addMs(p+"p99", o.lat.pct(99))
					m.addMs(p+"max", o.lat.pct(100))
				}
			}
			return m, nil
		})
}

// benchFsyncCmd is "subrole bench fsync".
func benchFsyncCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("fsync", stderr)
	n := fs.Int("n", 500, "syncs per run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	return repeatRuns(ctx, stdout, "fsync: the disk's commit cost", "subrole bench fsync "+strings.Join(args, " "), *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			f, c, err := measureFsync(dir, *n)
			if err != nil {
				return nil, err
			}
			var m metrics
			m.addMs("fsync of a 4 KiB write p50", f)
			m.addMs("bbolt commit of one small put p50", c)
			for _, pages := range []int{1, 4, 16, 64, 256} {
				d, err := measureScatteredSync(dir, pages, max(*n/10, 20))
				if err != nil {
					return nil, err
				}
				m.addMs(fmt.Sprintf("fsync after %d scattered 4 KiB writes p50", pages), d)
			}
			return m, nil
		})
}

// measureScatteredSync returns the median time of writing pages 4 KiB pages
// at random places in a 256 MiB file and fsyncing: what a commit that dirtied
// that many B+tree pages costs.
func measureScatteredSync(dir string, pages, n int) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "scatter-")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const size = 256 << 20
	if err := f.Truncate(size); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(uint64(pages), uint64(n)))
	var l latencies
	for range n {
		t := time.Now()
		for range pages {
			if _, err := f.WriteAt(buf, rng.Int64N(size/4096)*4096); err != nil {
				return 0, fmt.Errorf("bench: %w", err)
			}
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("bench: %w", err)
		}
		l = append(l, time.Since(t))
	}
	return l.sorted().pct(50), nil
}

// measureFsync returns the median time of writing 4 KiB and fsyncing it, and
// of a bbolt commit of one small put (bbolt syncs twice per commit: the data
// pages, then the meta page), in dir.
func measureFsync(dir string, n int) (fsync, commit time.Duration, err error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var fl latencies
	for i := range n {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			return 0, 0, fmt.Errorf("bench: %w", err)
		}
		if err := f.Sync(); err != nil {
			return 0, 0, fmt.Errorf("bench: %w", err)
		}
		fl = append(fl, time.Since(t))
	}
	path := filepath.Join(dir, "commit.db")
	defer os.Remove(path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	defer db.Close()
	var cl latencies
	for i := range n {
		t := time.Now()
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), buf[:100])
		})
		if err != nil {
			return 0, 0, fmt.Errorf("bench: %w", err)
		}
		cl = append(cl, time.Since(t))
	}
	return fl.sorted().pct(50), cl.sorted().pct(50), nil
}
