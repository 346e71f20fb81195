package fleet_test

import (
	"net/http"
	"testing"
	"time"
)

// TestFleetKillNode kills a node with SIGKILL while load runs through the
// two others, changes the group while it is down, and starts it again with
// the same config and node_id: it has every registration back (those made
// while it was down included) and routes again; no request through the
// others failed meanwhile.
func TestFleetKillNode(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOptions{})
	a, b, c := f.nodes[0], f.nodes[1], f.nodes[2]
	one, two, three := newBackend(t, "one"), newBackend(t, "two"), newBackend(t, "three")
	a.register("web", one.port(), two.port())
	waitAll(t, f.nodes, 20*time.Second, "the targets healthy", onTargets("web", healthy(one.port(), two.port())))

	load := startLoad(t, []*node{a, b}, 2)
	time.Sleep(500 * time.Millisecond) // the scenario: load before the crash
	c.kill()
	killed := time.Now()
	// Changes while the node is down.
	a.register("web", three.port())
	b.deregister("web", two.port())
	want := func(v view) bool {
		return registered(one.port(), three.port())(v) && deregistered(two.port())(v)
	}
	waitAll(t, []*node{a, b}, patience, "the changes made while a node is down", onTargets("web", want))
	time.Sleep(time.Second - time.Since(killed)) // the scenario: down for 1 s

	c.start()
	started := time.Now()
	d, err := converge([]*node{c}, started, 10*time.Second, "with every registration back", onTargets("web", want))
	if err != nil {
		t.Fatalf("after a restart with the same node_id:\n%v", err)
	}
	t.Logf("%s restarted: every registration back %s after its admin endpoint answered", c.id, d.Round(time.Millisecond))
	waitAll(t, []*node{c}, 20*time.Second, "routing again (targets healthy)", onTargets("web", healthy(one.port(), three.port())))
	client := &http.Client{Timeout: 5 * time.Second}
	for range 6 {
		if code, body, _ := c.get(client); code != 200 || (body != "one" && body != "three") {
			t.Fatalf("%s after its restart: GET / answered %d %q, want 200 from one or three", c.id, code, body)
		}
	}
	// The restarted node's own view is shared again: a change through it
	// is in force everywhere.
	c.deregister("web", three.port())
	if _, err := converge(f.nodes, time.Now(), patience, "deregistered through the restarted node", onTargets("web", deregistered(three.port()))); err != nil {
		t.Fatalf("a change through the restarted node:\n%v", err)
	}
	load.expectNoFailures(t)
}

// TestRedisStorageOneNode is one Caddy on Redis without fleet settings (no
// node_id, no sync_interval: their defaults): registrations are stored in
// Redis and come back after kill -9. It is also the fixture's own check:
// Redis starts, a node starts on the Redis storage, registration works.
func TestRedisStorageOneNode(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOptions{nodes: 1, single: true})
	n := f.nodes[0]
	b := newBackend(t, "b")
	n.register("web", b.port())
	waitAll(t, f.nodes, 20*time.Second, "the target healthy", onTargets("web", healthy(b.port())))
	client := &http.Client{Timeout: 5 * time.Second}
	if code, body, _ := n.get(client); code != 200 || body != "b" {
		t.Fatalf("GET / answered %d %q, want 200 b", code, body)
	}
	if keys, err := f.redis.command("DBSIZE"); err != nil || keys == "0" {
		t.Fatalf("Redis holds %s keys (%v) after a registration: the node does not store in it", keys, err)
	}
	n.kill()
	n.start()
	waitAll(t, f.nodes, 5*time.Second, "with the registration back after kill -9 and a start on Redis", onTargets("web", registered(b.port())))
}
