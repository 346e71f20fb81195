package targetgroup

import (
	"regexp"
	"testing"
)

// Ids are tg- and 17 lowercase hex: random for API groups, derived from
// the name for config groups; ARNs name the app's region and account; the
// registry finds a group by its name, id or either ARN.
func TestGroupIdentity(t *testing.T) {
	st := newFlakyStorage(t)
	r := startRegistry(t, st, newTestClock(), webConfig())
	r.account.Store(&account{region: "eu-west-1", id: "123456789012"})
	api := mustCreate(t, r, apiGroup("api", 80))
	web := r.Group("web")
	idForm := regexp.MustCompile(`^tg-[0-9a-f]{17}$`)
	for _, g := range []*Group{api, web} {
		if !idForm.MatchString(g.ID()) {
			t.Fatalf("id %q", g.ID())
		}
	}
	if web.ID() != groupID("web") {
		t.Fatalf("a config group's id %s is not derived from its name", web.ID())
	}
	if api.ID() == groupID("api") {
		t.Fatal("an API group's id is derived from its name")
	}
	if want := "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/" + api.ID()[3:19]; api.ARN() != want {
		t.Fatalf("ARN %s, want %s", api.ARN(), want)
	}
	if want := "arn:aws:vpc-lattice:eu-west-1:123456789012:targetgroup/" + api.ID(); api.LatticeARN() != want {
		t.Fatalf("Lattice ARN %s, want %s", api.LatticeARN(), want)
	}
	for _, ref := range []string{"api", api.ID(), api.ARN(), api.LatticeARN()} {
		if g, err := r.Lookup(ref); err != nil || g != api {
			t.Fatalf("Lookup(%q): %v %v", ref, g, err)
		}
	}
	if _, err := r.Lookup("tg-00000000000000000"); err == nil {
		t.Fatal("an unknown id was found")
	}
	// A restart reads the stored id back.
	must(t, r.Destruct())
	r2 := startRegistry(t, st, newTestClock(), webConfig())
	if g := r2.Group("api"); g == nil || g.ID() != api.ID() {
		t.Fatalf("after a restart the api group is %v, want id %s", g, api.ID())
	}
}
