package healthcheck

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

const (
	defaultMaxConcurrent = 64
	defaultFirstJitter   = time.Second
	defaultInterval      = 30 * time.Second
)

// Scheduler runs periodic jobs, typically one health check per target, for
// every target of every group. A single goroutine keeps the jobs in a min-heap
// ordered by next run time, so scheduling costs O(log n) and idle jobs cost
// no goroutine; a run gets its own goroutine only while it runs, and a
// semaphore bounds how many run at once.
type Scheduler struct {
	mu          sync.Mutex
	jobs        map[string]*job
	queue       jobHeap
	firstJitter time.Duration
	started     bool

	sem    chan struct{}
	wake   chan struct{} // capacity 1: one pending wake-up is enough
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and every run
	stop   sync.Once
}

type job struct {
	key      string
	interval time.Duration
	run      func(ctx context.Context)
	phase    time.Time // nominal run time, free of jitter so jitter does not accumulate
	next     time.Time // phase plus jitter: when the job is due
	index    int       // position in the heap, -1 once removed
	running  bool
}

// NewScheduler returns a scheduler running at most maxConcurrent jobs at
// once (<= 0 means 64). Jobs may be added before Start.
func NewScheduler(maxConcurrent int) *Scheduler {
	if maxConcurrent <= 0 {
		maxConcurrent = defaultMaxConcurrent
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{
		jobs:        make(map[string]*job),
		firstJitter: defaultFirstJitter,
		sem:         make(chan struct{}, maxConcurrent),
		wake:        make(chan struct{}, 1),
		ctx:         ctx,
		cancel:      cancel,
	}
}

// SetFirstJitter sets the bound of the random delay before a new job's first
// run (default 1s). It affects jobs added afterwards.
func (s *Scheduler) SetFirstJitter(d time.Duration) {
	s.mu.Lock()
	s.firstJitter = d
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
		// Under the lock so that Start cannot slip in between cancel and Wait.
		s.mu.Lock()
		s.cancel()
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// Upsert adds a job or replaces the interval and function of an existing one.
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
func (s *Scheduler) Upsert(key string, interval time.Duration, run func(ctx context.Context)) {
	if interval <= 0 {
		// A zero interval would spin; fall back to the AWS default rather
		// than panic inside the server.
		interval = defaultInterval
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if j, ok := s.jobs[key]; ok {
		j.interval, j.run = interval, run
		if limit := now.Add(interval); j.next.After(limit) {
			j.phase, j.next = limit, limit
			heap.Fix(&s.queue, j.index)
		}
		return
	}
	j := &job{key: key, interval: interval, run: run}
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
	if j, ok := s.jobs[key]; ok {
		delete(s.jobs, key)
		heap.Remove(&s.queue, j.index)
	}
}

// RunNow makes the job due immediately, for instance after a settings change;
// its regular runs then continue one interval after this one.
func (s *Scheduler) RunNow(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[key]; ok {
		now := time.Now()
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

func (s *Scheduler) loop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		j, wait := s.due()
		if j == nil {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
			case <-s.ctx.Done():
				return
			}
			continue
		}
		// Wait for a slot outside the lock so that Upsert and Remove go on
		// while every slot is busy.
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		if s.jobs[j.key] != j { // removed while waiting for the slot
			j.running = false
			s.mu.Unlock()
			<-s.sem
			continue
		}
		run := j.run
		s.wg.Add(1)
		s.mu.Unlock()
		go s.execute(j, run)
	}
}

// due reschedules and returns the first due job that is not running, or
// returns how long to wait for the next one. A due job still running from its
// previous turn is skipped until its next turn: a job never runs alongside
// itself, and a slow target is not checked back to back.
func (s *Scheduler) due() (*job, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for len(s.queue) > 0 {
		j := s.queue[0]
		if wait := j.next.Sub(now); wait > 0 {
			return nil, wait
		}
		j.phase = j.phase.Add(j.interval)
		if j.phase.Before(now) {
			// More than an interval behind (a long stall, slots exhausted):
			// restart the cadence from now rather than run catch-up bursts.
			j.phase = now
		}
		j.next = j.phase.Add(jitter(j.interval))
		heap.Fix(&s.queue, 0)
		if !j.running {
			j.running = true
			return j, 0
		}
	}
	return nil, time.Hour
}

func (s *Scheduler) execute(j *job, run func(context.Context)) {
	defer s.wg.Done()
	defer func() {
		<-s.sem
		s.mu.Lock()
		j.running = false
		s.mu.Unlock()
	}()
	// A panicking check must not take the process, or the scheduler, down;
	// the job simply runs again at its next turn.
	defer func() { _ = recover() }()
	run(s.ctx)
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
