package integration_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

func init() {
	caddy.RegisterModule(flakyStorage{})
}

// flakyStorage is the `caddy.storage.test_flaky` module: a file_system
// storage that fails every call while its root is marked down (storageDown),
// as a storage server that went away would.
type flakyStorage struct {
	Root string `json:"root"`
}

func (flakyStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.test_flaky", New: func() caddy.Module { return new(flakyStorage) }}
}

func (s flakyStorage) CertMagicStorage() (certmagic.Storage, error) {
	return &flakyStore{FileStorage: &certmagic.FileStorage{Path: s.Root}, down: storageDown(s.Root)}, nil
}

var downSwitches sync.Map // storage root → *atomic.Bool

// storageDown is the switch of the flaky storage rooted at root.
func storageDown(root string) *atomic.Bool {
	v, _ := downSwitches.LoadOrStore(root, new(atomic.Bool))
	return v.(*atomic.Bool)
}

type flakyStore struct {
	*certmagic.FileStorage
	down *atomic.Bool
}

var errTestStorageDown = errors.New("test storage is down")

func (s *flakyStore) check() error {
	if s.down.Load() {
		return errTestStorageDown
	}
	return nil
}

func (s *flakyStore) Lock(ctx context.Context, key string) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.FileStorage.Lock(ctx, key)
}

// Unlock always works, so that a lock taken before the storage went down
// is not left to go stale.

func (s *flakyStore) Store(ctx context.Context, key string, value []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.FileStorage.Store(ctx, key, value)
}

func (s *flakyStore) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func (s *flakyStore) Delete(ctx context.Context, key string) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.FileStorage.Delete(ctx, key)
}

func (s *flakyStore) Exists(ctx context.Context, key string) bool {
	return s.check() == nil && s.FileStorage.Exists(ctx, key)
}

func (s *flakyStore) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.FileStorage.List(ctx, prefix, recursive)
}

func (s *flakyStore) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.check(); err != nil {
		return certmagic.KeyInfo{}, err
	}
	return s.FileStorage.Stat(ctx, key)
}

// While the storage is down, every API write is refused with 503
// StorageUnavailable and changes nothing, reads still answer, and once it
// is back — even when it was down at the start — every change that was
// acknowledged survives restarts.
func TestStorageUnavailable(t *testing.T) {
	in := newInstance(t)
	down := storageDown(in.storage)
	cfg := caddyConfig{
		groups: map[string]any{"web": `{"health_check": {"enabled": false}, "targets": [{"id": "127.0.0.1", "port": 1}]}`},
		top:    map[string]any{"storage": map[string]any{"module": "test_flaky", "root": in.storage}},
	}.json()
	start := func() {
		t.Helper()
		if err := in.load(cfg); err != nil {
			t.Fatal(err)
		}
	}
	restart := func() {
		t.Helper()
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
		start()
	}
	start()
	t.Cleanup(func() { _ = caddy.Stop() })
	ok := func(method, path string, body any) {
		t.Helper()
		in.mustAPI(method, path, body, nil)
	}
	refused := func(method, path string, body any, says string) {
		t.Helper()
		var e apiError
		if code := in.api(method, path, body, &e); code != 503 || e.Error.Code != "StorageUnavailable" || !strings.Contains(e.Error.Message, says) {
			t.Fatalf("%s %s with the storage down: %d %+v, want 503 StorageUnavailable saying %q", method, path, code, e, says)
		}
	}
	groups := func() []any {
		t.Helper()
		var list struct {
			TargetGroups []any `json:"target_groups"`
		}
		in.mustAPI("GET", "/target-groups/", nil, &list)
		return list.TargetGroups
	}
	api := map[string]any{"name": "api", "port": 9000, "health_check": map[string]any{"enabled": false}, "targets": []map[string]any{{"id": "127.0.0.1"}}}
	ok("POST", "/target-groups/web/targets", targets(2, 3))
	ok("POST", "/target-groups/", api)

	down.Store(true)
	web, all := in.health("web"), groups()
	writes := []struct {
		method, path string
		body         any
	}{
		{"POST", "/target-groups/web/targets", targets(4)},
		{"POST", "/target-groups/web/targets/deregister", targets(2)},
		{"POST", "/target-groups/", map[string]any{"name": "fresh", "port": 80}},
		{"PATCH", "/target-groups/api", `{"health_check":{"path":"/ready"}}`},
		{"PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5"}}`},
		{"DELETE", "/target-groups/api", nil},
	}
	for _, w := range writes {
		refused(w.method, w.path, w.body, "could not be written to storage")
	}
	if got := in.health("web"); !reflect.DeepEqual(got, web) {
		t.Fatalf("refused writes changed web:\n%+v\nbefore:\n%+v", got, web)
	}
	if got := groups(); !reflect.DeepEqual(got, all) {
		t.Fatalf("refused writes changed the groups:\n%v\nbefore:\n%v", got, all)
	}

	down.Store(false)
	ok("POST", "/target-groups/web/targets", targets(4))
	ok("POST", "/target-groups/web/targets/deregister", targets(2))
	ok("PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5"}}`)
	acknowledged := map[string]string{"127.0.0.1:1": "unavailable", "127.0.0.1:3": "unavailable", "127.0.0.1:4": "unavailable"}
	restart()
	if got := in.states("web"); !reflect.DeepEqual(got, acknowledged) {
		t.Fatalf("after a restart web holds %v, want %v", got, acknowledged)
	}
	var attrs struct {
		Attributes map[string]string `json:"attributes"`
	}
	if code := in.api("GET", "/target-groups/api/attributes", nil, &attrs); code != 200 || attrs.Attributes["deregistration_delay.timeout_seconds"] != "5" {
		t.Fatalf("api after a restart: %d %v", code, attrs.Attributes)
	}

	// Down at the start: nothing stored is read yet, so writes would
	// overwrite it; they wait until a background retry has read it all.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	start()
	if got := in.states("web"); len(got) != 1 {
		t.Fatalf("restored %v from a storage that is down", got)
	}
	refused("POST", "/target-groups/web/targets", targets(5), "could not be read yet")
	refused("POST", "/target-groups/", map[string]any{"name": "fresh", "port": 80}, "could not be read yet")
	down.Store(false)
	waitFor(t, "the stored groups to be read", 15*time.Second, func() bool {
		return reflect.DeepEqual(in.states("web"), acknowledged) && in.api("GET", "/target-groups/api", nil, nil) == 200
	})
	waitFor(t, "writes to be accepted again", 15*time.Second, func() bool {
		return in.api("POST", "/target-groups/web/targets", targets(5), nil) == 200
	})
	restart()
	acknowledged["127.0.0.1:5"] = "unavailable"
	if got := in.states("web"); !reflect.DeepEqual(got, acknowledged) {
		t.Fatalf("after the last restart web holds %v, want %v", got, acknowledged)
	}
	in.mustAPI("GET", "/target-groups/api", nil, nil)
}
