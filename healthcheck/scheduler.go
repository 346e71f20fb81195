package healthcheck

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"
)

const (
	// A blackholed target holds its slot for the whole timeout, so a group
	// with many dead targets can keep this many checks in flight; the bound
	// keeps it from taking the slots every other group needs.
	defaultMaxPerGroup = 64
	// The global bound only guards file descriptors: it is far above what
	// any one group can hold, so it is reached only when dozens of groups
	// are saturated at once.
	defaultMaxTotal    = 4096
	defaultFirstJitter = time.Second
	defaultInterval    = 30 * time.Second
)

// Clock is the time a Scheduler runs on. The system clock is the default;
// a test passes a manual one (WithClock) to step through turns without
// waiting for them.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending call of Clock.AfterFunc; *time.Timer is one.
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// SystemClock is the Clock of the time package.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc returns time.AfterFunc(d, f).
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Scheduler runs periodic jobs, typically one health check per target, for
// every target of every group. A single goroutine keeps the jobs in a min-heap
// ordered by next run time, so scheduling costs O(log n) and idle jobs cost
// no goroutine; a run gets its own goroutine only while it runs.
//
// Jobs belong to a group, and each group may run only a bounded number of
// jobs at once, so that slow or blackholed targets, which hold their slot for
// the whole timeout, delay the checks of their own group only. A due job
// whose group is at its bound waits in the group's backlog; slots freed
// under the global bound are handed out round robin across the groups
// waiting for one. The scheduling goroutine itself never waits for a slot.
type Scheduler struct {
	mu          sync.Mutex
	jobs        map[string]*job
	groups      map[string]*group
	queue       jobHeap
	ready       []*group // groups with a backlog and a slot of their own, waiting for a global slot, in turn order
	running     int
	maxPerGroup int
	maxTotal    int
	firstJitter time.Duration
	clock       Clock
	started     bool
	onPanic     func(key string, recovered any, stack []byte)

	// onStart, when set before Start, sees when each run was due and when it
	// started: the lag a test asserts on.
	onStart func(group, key string, due, start time.Time)

	wake   chan struct{} // capacity 1: one pending wake-up is enough
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and every run
	stop   sync.Once
}

// group is the unit of fairness: its jobs share its slots and its backlog.
type group struct {
	name    string
	jobs    int // jobs that belong to the group; it is dropped at zero with nothing running
	running int
	backlog jobList // due jobs waiting for a slot, oldest first
	ready   bool    // in Scheduler.ready
}

type jobState uint8

const (
	idle jobState = iota
	queued
	running
)

type job struct {
	key      string
	group    *group
	interval time.Duration
	run      func(ctx context.Context)
	phase    time.Time // nominal run time, free of jitter so jitter does not accumulate
	next     time.Time // phase plus jitter: when the job is due
	due      time.Time // when the turn now queued or running was due
	index    int       // position in the heap, -1 once removed
	state    jobState
	prev     *job // backlog links, set while queued
	after    *job
}

// SchedulerOption adjusts a Scheduler built by NewScheduler.
type SchedulerOption func(*Scheduler)

// WithMaxTotal bounds the jobs running at once across all groups (<= 0 means
// 4096).
func WithMaxTotal(n int) SchedulerOption {
	return func(s *Scheduler) {
		if n > 0 {
			s.maxTotal = n
		}
	}
}

// WithClock runs the scheduler on c instead of the system clock.
func WithClock(c Clock) SchedulerOption {
	return func(s *Scheduler) {
		if c != nil {
			s.clock = c
		}
	}
}

// NewScheduler returns a scheduler running at most maxPerGroup jobs of one
// group at once (<= 0 means 64), and at most 4096 in all unless an option
// says otherwise. Jobs may be added before Start.
func NewScheduler(maxPerGroup int, opts ...SchedulerOption) *Scheduler {
	if maxPerGroup <= 0 {
		maxPerGroup = defaultMaxPerGroup
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		jobs:        make(map[string]*job),
		groups:      make(map[string]*group),
		maxPerGroup: maxPerGroup,
		maxTotal:    defaultMaxTotal,
		firstJitter: defaultFirstJitter,
		clock:       SystemClock{},
		wake:        make(chan struct{}, 1),
		ctx:         ctx,
		cancel:      cancel,
	}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// SetFirstJitter sets the bound of the random delay before a new job's first
// run (default 1s). It affects jobs added afterwards.
func (s *Scheduler) SetFirstJitter(d time.Duration) {
	s.mu.Lock()
	s.firstJitter = d
	s.mu.Unlock()
}

// SetPanicHandler sets a function told about every panic of a job, with the
// value recovered and the stack of the panicking run. The job itself runs
// again at its next turn whether or not a handler is set. The handler runs on
// the job's goroutine, still holding its slot, so it should be quick.
func (s *Scheduler) SetPanicHandler(f func(key string, recovered any, stack []byte)) {
	s.mu.Lock()
	s.onPanic = f
	s.mu.Unlock()
}

// Start starts the scheduling goroutine. Calling it again, or after Stop, does
// nothing.
func (s *Scheduler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.ctx.Err() != nil {
		return
	}
	s.started = true
	s.wg.Add(1)
	go s.loop()
}

// Stop stops scheduling, cancels the context of running jobs and waits for
// them to return. It is idempotent.
func (s *Scheduler) Stop() {
	s.stop.Do(func() {
		// Under the lock so that Start cannot slip in between cancel and
		// Wait, and so that no run starts once the context is cancelled.
		s.mu.Lock()
		s.cancel()
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// Upsert adds a job to a group, or replaces the group, interval and function
// of an existing one.
//
// A new job first runs after a random delay below min(interval, first
// jitter): soon, because a new target should be checked quickly, yet spread,
// because a batch of thousands of registrations must not fire at once. It
// then runs every interval, give or take 10%, so that the checks of many
// targets spread over the interval instead of clustering.
//
// An existing job keeps its phase, so a configuration reload does not make
// every check fire at once; only when the new interval is shorter than the
// wait before its next run is that run brought forward to one new interval
// from now. An interval <= 0 means 30s, the AWS default.
func (s *Scheduler) Upsert(group, key string, interval time.Duration, run func(ctx context.Context)) {
	if interval <= 0 {
		// A zero interval would spin; fall back to the AWS default rather
		// than panic inside the server.
		interval = defaultInterval
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if j, ok := s.jobs[key]; ok {
		j.interval, j.run = interval, run
		if j.group.name != group {
			s.move(j, group)
		}
		if limit := now.Add(interval); j.next.After(limit) {
			j.phase, j.next = limit, limit
			heap.Fix(&s.queue, j.index)
		}
		return
	}
	j := &job{key: key, group: s.groupFor(group), interval: interval, run: run}
	j.group.jobs++
	j.phase = now.Add(randDuration(min(interval, s.firstJitter)))
	j.next = j.phase
	s.jobs[key] = j
	heap.Push(&s.queue, j)
	if j.index == 0 {
		s.signal()
	}
}

// Remove removes a job. A run in progress is not interrupted.
func (s *Scheduler) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[key]
	if !ok {
		return
	}
	delete(s.jobs, key)
	heap.Remove(&s.queue, j.index)
	s.leave(j)
}

// RunNow makes the job due immediately, for instance after a settings change;
// its regular runs then continue one interval after this one.
func (s *Scheduler) RunNow(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[key]; ok {
		now := s.clock.Now()
		j.phase, j.next = now, now
		heap.Fix(&s.queue, j.index)
		s.signal()
	}
}

// Len returns the number of jobs.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) groupFor(name string) *group {
	g, ok := s.groups[name]
	if !ok {
		g = &group{name: name}
		s.groups[name] = g
	}
	return g
}

// leave takes j out of its group, and out of the group's backlog if it is
// waiting there: the backlog only ever holds live jobs.
func (s *Scheduler) leave(j *job) {
	g := j.group
	if j.state == queued {
		g.backlog.remove(j)
		j.state = idle
	}
	g.jobs--
	s.dropIfUnused(g)
}

// move puts j in another group. A run in progress stays charged to the old
// group; a turn waiting in the old backlog waits in the new group instead.
func (s *Scheduler) move(j *job, name string) {
	wasQueued := j.state == queued
	s.leave(j)
	j.group = s.groupFor(name)
	j.group.jobs++
	if wasQueued {
		s.admit(j)
	}
}

func (s *Scheduler) dropIfUnused(g *group) {
	// A dropped group may still sit in s.ready; dispatch skips it, as its
	// backlog is empty.
	if g.jobs == 0 && g.running == 0 && s.groups[g.name] == g {
		delete(s.groups, g.name)
	}
}

func (s *Scheduler) loop() {
	defer s.wg.Done()
	// The timer only wakes the loop up; what is due is read from the heap,
	// so a wake-up that comes late, early or twice costs one look at it.
	timer := s.clock.AfterFunc(time.Hour, s.signal)
	defer timer.Stop()
	for {
		timer.Reset(s.admitDue())
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
	}
}

// admitDue reschedules every due job, starts or queues those that are idle,
// and returns how long to wait for the next one. A due job still running or
// queued from its previous turn skips this turn: a job never runs alongside
// itself, a slow target is not checked back to back, and a backlog holds a
// job at most once.
func (s *Scheduler) admitDue() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for len(s.queue) > 0 {
		j := s.queue[0]
		if wait := j.next.Sub(now); wait > 0 {
			return wait
		}
		due := j.next
		j.phase = j.phase.Add(j.interval)
		if j.phase.Before(now) {
			// More than an interval behind (a long stall, a saturated
			// group): restart the cadence from now rather than run
			// catch-up bursts.
			j.phase = now
		}
		j.next = j.phase.Add(jitter(j.interval))
		heap.Fix(&s.queue, 0)
		if j.state == idle {
			j.due = due
			s.admit(j)
		}
	}
	return time.Hour
}

// admit starts j if its group and the scheduler have a free slot, and
// otherwise queues it in its group's backlog.
func (s *Scheduler) admit(j *job) {
	g := j.group
	if g.backlog.len == 0 && g.running < s.maxPerGroup && s.running < s.maxTotal {
		s.start(j)
		return
	}
	j.state = queued
	g.backlog.push(j)
	s.markReady(g)
}

// markReady puts g at the end of the line for a global slot if it has work
// and a slot of its own.
func (s *Scheduler) markReady(g *group) {
	if !g.ready && g.backlog.len > 0 && g.running < s.maxPerGroup {
		g.ready = true
		s.ready = append(s.ready, g)
	}
}

// dispatch hands out free global slots, one job per group in turn, so that
// one group's backlog cannot take every slot that frees up.
func (s *Scheduler) dispatch() {
	for s.running < s.maxTotal && len(s.ready) > 0 {
		g := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		g.ready = false
		if g.running >= s.maxPerGroup {
			continue // back in line when one of its runs ends
		}
		if j := g.backlog.pop(); j != nil {
			s.start(j)
			s.markReady(g)
		}
	}
}

func (s *Scheduler) start(j *job) {
	if s.ctx.Err() != nil {
		j.state = idle
		return
	}
	j.state = running
	g := j.group
	g.running++
	s.running++
	s.wg.Add(1)
	go s.execute(j, g, j.run, j.due)
}

// execute runs one turn of j, charged to g.
func (s *Scheduler) execute(j *job, g *group, run func(context.Context), due time.Time) {
	defer s.wg.Done()
	defer s.finish(j, g)
	if s.onStart != nil {
		s.onStart(g.name, j.key, due, s.clock.Now())
	}
	// A panicking check must not take the process, or the scheduler, down;
	// the job simply runs again at its next turn.
	defer func() {
		if r := recover(); r != nil {
			s.panicked(j.key, r)
		}
	}()
	run(s.ctx)
}

func (s *Scheduler) panicked(key string, r any) {
	s.mu.Lock()
	f := s.onPanic
	s.mu.Unlock()
	if f == nil {
		return
	}
	stack := debug.Stack()
	// Nor may a panicking handler: there is nobody left to tell.
	defer func() { _ = recover() }()
	f(key, r, stack)
}

func (s *Scheduler) finish(j *job, g *group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j.state = idle
	g.running--
	s.running--
	s.markReady(g)
	s.dispatch()
	s.dropIfUnused(g)
}

// jitter returns a random offset within ±10% of interval.
func jitter(interval time.Duration) time.Duration {
	spread := interval / 5
	return randDuration(spread) - spread/2
}

// randDuration returns a random duration in [0, d), or 0 when d <= 0.
func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// jobList is a FIFO threaded through the jobs themselves, so that queueing
// allocates nothing and Remove takes a job out of a backlog in O(1).
type jobList struct {
	head, tail *job
	len        int
}

func (l *jobList) push(j *job) {
	j.prev, j.after = l.tail, nil
	if l.tail != nil {
		l.tail.after = j
	} else {
		l.head = j
	}
	l.tail = j
	l.len++
}

func (l *jobList) pop() *job {
	j := l.head
	if j != nil {
		l.remove(j)
	}
	return j
}

func (l *jobList) remove(j *job) {
	if j.prev != nil {
		j.prev.after = j.after
	} else {
		l.head = j.after
	}
	if j.after != nil {
		j.after.prev = j.prev
	} else {
		l.tail = j.prev
	}
	j.prev, j.after = nil, nil
	l.len--
}

// jobHeap orders jobs by next run time.
type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, k int) bool { return h[i].next.Before(h[k].next) }
func (h jobHeap) Swap(i, k int) {
	h[i], h[k] = h[k], h[i]
	h[i].index = i
	h[k].index = k
}
func (h *jobHeap) Push(x any) {
	j := x.(*job)
	j.index = len(*h)
	*h = append(*h, j)
}
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	j.index = -1
	*h = old[:len(old)-1]
	return j
}
