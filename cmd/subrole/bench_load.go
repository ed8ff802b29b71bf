package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/subrole/subrole/twitch/twitchtest"
)

// This file is the load generator: it builds real, signed EventSub
// notifications and posts them over real HTTP connections, either as fast
// as the connections allow (closed loop) or on a fixed schedule (open loop),
// and measures every acknowledgement.

// genSpec describes the notifications a loadGen builds.
type genSpec struct {
	// Users is how many distinct Twitch users events are for; they are the
	// world's viewers First..First+Users-1 (twitchID). Zero means 1000.
	Users int
	// First is the first viewer number. Zero means 1.
	First int
	// Sequential sends to the users in order, wrapping around, instead of
	// picking them at random.
	Sequential bool
	// Mix weighs the event types: subscribe, resub, end and gift. The zero
	// Mix sends only channel.subscribe.
	Mix eventMix
	// GiftRatio is the fraction of channel.subscribe events with is_gift.
	GiftRatio float64
	// Tiers are the tiers to pick from. Empty means 1000, 2000 and 3000.
	Tiers []string
	// DupRatio is the fraction of deliveries that repeat an earlier message
	// with the same id, as Twitch does when unsure it was delivered.
	DupRatio float64
	// Seed seeds the random choices; zero means random.
	Seed uint64
}

// eventMix weighs event types.
type eventMix struct{ Subscribe, Resub, End, Gift int }

// parseMix parses "subscribe=80,resub=10,end=5,gift=5".
func parseMix(s string) (eventMix, error) {
	var m eventMix
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("bench: -mix: %q is not type=weight", part)
		}
		switch strings.TrimSpace(k) {
		case "subscribe":
			m.Subscribe = n
		case "resub":
			m.Resub = n
		case "end":
			m.End = n
		case "gift":
			m.Gift = n
		default:
			return m, fmt.Errorf("bench: -mix: unknown event type %q (subscribe, resub, end, gift)", k)
		}
	}
	if m == (eventMix{}) {
		return m, errors.New("bench: -mix: every weight is zero")
	}
	return m, nil
}

// loadGen builds notifications as genSpec says. It is safe for concurrent use.
type loadGen struct {
	spec   genSpec
	sender *twitchtest.Sender

	mu     sync.Mutex
	rng    *rand.Rand
	next   int
	recent []twitchtest.Message // ring of sent messages, for duplicates
	pos    int
}

// newLoadGen returns a generator that builds messages with sender; zero
// fields of spec take the defaults genSpec documents.
func newLoadGen(sender *twitchtest.Sender, spec genSpec) *loadGen {
	if spec.Users <= 0 {
		spec.Users = 1000
	}
	if spec.First <= 0 {
		spec.First = 1
	}
	if spec.Mix == (eventMix{}) {
		spec.Mix = eventMix{Subscribe: 1}
	}
	if len(spec.Tiers) == 0 {
		spec.Tiers = []string{"1000", "2000", "3000"}
	}
	seed := spec.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &loadGen{spec: spec, sender: sender, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		recent: make([]twitchtest.Message, 0, 1024)}
}

// message returns the next notification to deliver and whether it repeats
// an earlier one.
func (g *loadGen) message() (twitchtest.Message, bool) {
	g.mu.Lock()
	if len(g.recent) > 0 && g.rng.Float64() < g.spec.DupRatio {
		m := g.recent[g.rng.IntN(len(g.recent))]
		m.Retry++
		g.mu.Unlock()
		return m, true
	}
	var n int
	if g.spec.Sequential {
		n = g.spec.First + g.next%g.spec.Users
		g.next++
	} else {
		n = g.spec.First + g.rng.IntN(g.spec.Users)
	}
	tier := g.spec.Tiers[g.rng.IntN(len(g.spec.Tiers))]
	mix := g.spec.Mix
	pick := g.rng.IntN(mix.Subscribe + mix.Resub + mix.End + mix.Gift)
	gift := g.rng.Float64() < g.spec.GiftRatio
	months := 1 + g.rng.IntN(24)
	g.mu.Unlock()

	id, login := twitchID(n), "viewer"+strconv.Itoa(n)
	var m twitchtest.Message
	switch {
	case pick < mix.Subscribe:
		m = g.sender.Subscribe(id, login, tier, gift)
	case pick < mix.Subscribe+mix.Resub:
		m = g.sender.Resub(id, login, tier, months, months, 1)
	case pick < mix.Subscribe+mix.Resub+mix.End:
		m = g.sender.End(id, login, tier, gift)
	default:
		total := 1 + months%5
		m = g.sender.Gift(id, login, tier, total, nil, false)
	}

	g.mu.Lock()
	if len(g.recent) < cap(g.recent) {
		g.recent = append(g.recent, m)
	} else {
		g.recent[g.pos] = m
		g.pos = (g.pos + 1) % len(g.recent)
	}
	g.mu.Unlock()
	return m, false
}

// loadSpec says how to deliver.
type loadSpec struct {
	// Conns is how many requests may be in flight at once, each on its own
	// keep-alive connection. Zero means 64.
	Conns int
	// Rate is the open-loop schedule in events per second: event i is due
	// at start + i/Rate whether or not earlier ones were answered, and its
	// latency counts from when it was due, so a stall is not hidden
	// (no coordinated omission). Zero means closed loop: each connection
	// sends its next event as soon as the previous one is answered.
	Rate float64
	// Duration stops sending after this long; Count after this many events.
	// At least one must be set; the first reached ends the run.
	Duration time.Duration
	Count    int
}

// sample is one delivery.
type sample struct {
	At      time.Time     // when it was due (open loop) or sent (closed loop)
	Latency time.Duration // until the answer was read
	Status  int           // 0 on a transport error
	Dup     bool
}

// loadResult is what a run measured.
type loadResult struct {
	Sent, Acked, Dups int
	Errors            map[string]int // "status 500", "transport: connection refused"...
	Samples           []sample
	Elapsed           time.Duration // first due time to last answer
}

// ackLatencies returns the latencies of acknowledged (2xx) deliveries
// whose due time lies in [from, to); zero times mean unbounded.
func (r *loadResult) ackLatencies(from, to time.Time) latencies {
	var l latencies
	for _, s := range r.Samples {
		if s.Status/100 == 2 && (from.IsZero() || !s.At.Before(from)) && (to.IsZero() || s.At.Before(to)) {
			l = append(l, s.Latency)
		}
	}
	return l
}

// rate returns acknowledged events per second.
func (r *loadResult) rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Elapsed.Seconds()
}

// errorSummary returns "none" or the errors by kind, most frequent first.
func (r *loadResult) errorSummary() string {
	if len(r.Errors) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return r.Errors[b] - r.Errors[a] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, r.Errors[k]))
	}
	return strings.Join(parts, ", ")
}

// addTo adds the run's standard metrics under prefix.
func (r *loadResult) addTo(m *metrics, prefix string) {
	m.add(prefix+"acknowledged", float64(r.Acked), "events")
	m.add(prefix+"acknowledged/s", r.rate(), "1/s")
	m.addPercentiles(prefix+"ack", r.ackLatencies(time.Time{}, time.Time{}))
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	m.add(prefix+"errors", float64(n), "requests")
}

// newLoadClient returns an HTTP client for conns concurrent requests:
// keep-alive connections, no proxy, Twitch's 10 second timeout.
func newLoadClient(conns int) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: t, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// deliver posts m to url and returns the status (0 on a transport error).
func deliver(ctx context.Context, client *http.Client, url string, m twitchtest.Message) (int, error) {
	req, err := m.NewRequest(ctx, url)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// errorKind classifies a transport error for the report.
func errorKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "transport: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "transport: connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "transport: connection closed"
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return "transport: timeout"
	case errors.Is(err, context.Canceled):
		return "transport: cancelled"
	}
	return "transport: other"
}

// job is one delivery handed to a connection.
type job struct {
	m   twitchtest.Message
	dup bool
	due time.Time
}

// runLoad delivers the messages next returns to url as spec says. done, if
// not nil, is called after each delivery from the connection's goroutine.
// next returning ok=false ends the run early.
func runLoad(ctx context.Context, client *http.Client, url string, spec loadSpec,
	next func() (m twitchtest.Message, dup, ok bool), done func(m twitchtest.Message, s sample, err error)) loadResult {
	conns := spec.Conns
	if conns <= 0 {
		conns = 64
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu     sync.Mutex
		res    = loadResult{Errors: map[string]int{}}
		sent   atomic.Int64
		last   time.Time
		jobs   = make(chan job, 1<<16)
		wg     sync.WaitGroup
		start  = time.Now()
		closed = spec.Rate <= 0
	)
	record := func(j job, status int, err error) {
		end := time.Now()
		s := sample{At: j.due, Latency: end.Sub(j.due), Status: status, Dup: j.dup}
		mu.Lock()
		res.Samples = append(res.Samples, s)
		res.Sent++
		if j.dup {
			res.Dups++
		}
		switch {
		case err != nil:
			res.Errors[errorKind(err)]++
		case status/100 == 2:
			res.Acked++
		default:
			res.Errors["status "+strconv.Itoa(status)]++
		}
		if end.After(last) {
			last = end
		}
		mu.Unlock()
		if done != nil {
			done(j.m, s, err)
		}
	}
	// take claims the right to send one more event, within Count.
	take := func() bool {
		n := sent.Add(1)
		return spec.Count <= 0 || n <= int64(spec.Count)
	}
	deadline := time.Time{}
	if spec.Duration > 0 {
		deadline = start.Add(spec.Duration)
	}
	expired := func(t time.Time) bool { return !deadline.IsZero() && !t.Before(deadline) }

	for range conns {
		wg.Go(func() {
			if closed {
				for ctx.Err() == nil && !expired(time.Now()) && take() {
					m, dup, ok := next()
					if !ok {
						return
					}
					j := job{m: m, dup: dup, due: time.Now()}
					status, err := deliver(ctx, client, url, m)
					if ctx.Err() != nil {
						return
					}
					record(j, status, err)
				}
				return
			}
			for j := range jobs {
				status, err := deliver(ctx, client, url, j.m)
				if ctx.Err() != nil {
					return
				}
				record(j, status, err)
			}
		})
	}
	if !closed {
		interval := time.Duration(float64(time.Second) / spec.Rate)
	schedule:
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			if expired(due) || !take() {
				break
			}
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					break schedule
				}
			}
			m, dup, ok := next()
			if !ok {
				break
			}
			select {
			case jobs <- job{m: m, dup: dup, due: due}:
			case <-ctx.Done():
				break schedule
			}
		}
		close(jobs)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !last.IsZero() {
		res.Elapsed = last.Sub(start)
	}
	return res
}

// benchLoadCmd is "subrole bench load": the plain load generator against a
// running service.
func benchLoadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _, _ := benchFlags("load", stderr)
	url := fs.String("url", "", "the webhook URL, e.g. https://subs.example.com/twitch_eventsub (required)")
	secret := fs.String("secret", "", "the EventSub secret the service verifies with (default: $SUBROLE_EVENTSUB_SECRET)")
	broadcaster := fs.String("broadcaster", twitchtest.DefaultBroadcasterID, "broadcaster_user_id in the events (the service's SUBROLE_TWITCH_BROADCASTER_ID)")
	conns := fs.Int("conns", 64, "concurrent connections")
	rate := fs.Float64("rate", 0, "events per second (open loop); 0 sends as fast as the connections allow")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	count := fs.Int("n", 0, "stop after this many events (0: only -duration)")
	users := fs.Int("users", 1000, "distinct Twitch users (viewer numbers -first.. -first+users-1, Twitch IDs 500000+n)")
	first := fs.Int("first", 1, "first viewer number")
	sequential := fs.Bool("sequential", false, "send to the users in order instead of at random")
	mix := fs.String("mix", "subscribe=1", "event types and weights: subscribe, resub, end, gift")
	gifts := fs.Float64("gifts", 0, "fraction of channel.subscribe events that are gifts")
	tiers := fs.String("tiers", "1000,2000,3000", "tiers to pick from")
	dups := fs.Float64("dups", 0, "fraction of deliveries that repeat an earlier message id")
	seed := fs.Uint64("seed", 0, "random seed (0: random)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" {
		return errors.New("bench load: -url is required")
	}
	if *secret == "" {
		*secret = os.Getenv("SUBROLE_EVENTSUB_SECRET")
	}
	if *secret == "" {
		return errors.New("bench load: -secret (or SUBROLE_EVENTSUB_SECRET) is required")
	}
	m, err := parseMix(*mix)
	if err != nil {
		return err
	}
	sender := &twitchtest.Sender{Callback: *url, Secret: *secret, BroadcasterID: *broadcaster}
	gen := newLoadGen(sender, genSpec{Users: *users, First: *first, Sequential: *sequential, Mix: m,
		GiftRatio: *gifts, Tiers: strings.Split(*tiers, ","), DupRatio: *dups, Seed: *seed})
	printHeader(stdout, "load", "subrole bench load "+strings.Join(args, " "))
	res := runLoad(ctx, newLoadClient(*conns), *url, loadSpec{Conns: *conns, Rate: *rate, Duration: *duration, Count: *count},
		func() (twitchtest.Message, bool, bool) { msg, dup := gen.message(); return msg, dup, true }, nil)
	printLoadResult(stdout, &res)
	return nil
}

// printLoadResult prints a run in the load tool's format.
func printLoadResult(out io.Writer, r *loadResult) {
	fmt.Fprintf(out, "sent %d (%d repeated message ids), acknowledged %d in %s: %.0f/s\n",
		r.Sent, r.Dups, r.Acked, r.Elapsed.Round(time.Millisecond), r.rate())
	fmt.Fprintf(out, "ack latency: %s\n", r.ackLatencies(time.Time{}, time.Time{}).summary())
	fmt.Fprintf(out, "errors: %s\n", r.errorSummary())
}
