package targetgroup

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
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

// Each API names groups by its own model: the JSON API and the config as
// VPC Lattice (3-128 of a-z 0-9 -), ELBv2 1-32 characters with capitals;
// a name stored through either is read back on restart.
func TestGroupNameRules(t *testing.T) {
	for _, c := range []struct {
		name           string
		lattice, elbv2 bool
	}{
		{"web", true, true},
		{"Web-API", false, true},
		{"a", false, true},
		{"a--b", false, true},
		{"-web", false, false},
		{"web-", false, false},
		{"web_1", false, false},
		{"tg-web", false, true},
		{"tg-0123456789abcdef0", false, false},
		{"abcdefghijabcdefghijabcdefghijabc", true, false}, // 33 characters
	} {
		if got := ValidateName(c.name) == nil; got != c.lattice {
			t.Errorf("ValidateName(%q) accepted=%v, want %v", c.name, got, c.lattice)
		}
		if got := ValidateELBv2Name(c.name) == nil; got != c.elbv2 {
			t.Errorf("ValidateELBv2Name(%q) accepted=%v, want %v", c.name, got, c.elbv2)
		}
	}
	st := newFlakyStorage(t)
	r := startRegistry(t, st, newTestClock(), webConfig())
	if _, _, err := r.CreateGroup(apiGroup("Web-API", 80)); err == nil {
		t.Fatal("the JSON API's rule accepted a capital letter")
	}
	req := apiGroup("Web-API", 80)
	req.NameRule = ValidateELBv2Name
	g := mustCreate(t, r, req)
	must(t, r.Destruct())
	r2 := startRegistry(t, st, newTestClock(), webConfig())
	if g2 := r2.Group("Web-API"); g2 == nil || g2.ID() != g.ID() {
		t.Fatalf("after a restart the ELBv2-named group is %v, want id %s", g2, g.ID())
	}
}

// vpc_id and lambda_event_structure_version are kept and answered, and
// checked as VPC Lattice's model checks them.
func TestAWSOnlyFields(t *testing.T) {
	lambda := func(v string) *GroupConfig { return &GroupConfig{Type: TypeLambda, LambdaEventStructureVersion: v} }
	for _, c := range []struct {
		cfg   *GroupConfig
		field string
	}{
		{&GroupConfig{VPCID: "vpc-12345678"}, ""},
		{&GroupConfig{VPCID: "vpc-0123456789abcdef0"}, ""},
		{&GroupConfig{VPCID: "vpc-123"}, "vpc_id"},
		{&GroupConfig{VPCID: "subnet-12345678"}, "vpc_id"},
		{&GroupConfig{Type: TypeLambda, VPCID: "vpc-12345678"}, "vpc_id"},
		{lambda("v2"), ""},
		{lambda("V1"), ""},
		{lambda("V3"), "lambda_event_structure_version"},
		{&GroupConfig{LambdaEventStructureVersion: "V1"}, "lambda_event_structure_version"},
	} {
		spec, err := NewSpec(c.cfg, nil)
		var ve *ValidationError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v refused: %v", c.cfg, err)
		case c.field != "" && (!errors.As(err, &ve) || ve.Field != c.field):
			t.Errorf("%+v: got %v, want a validation error of %s", c.cfg, err, c.field)
		case c.field == "" && c.cfg.Type == TypeLambda && spec.Config.LambdaEventStructureVersion != strings.ToUpper(c.cfg.LambdaEventStructureVersion):
			t.Errorf("%+v: version %q", c.cfg, spec.Config.LambdaEventStructureVersion)
		}
	}
}

// A group's creation time is stored with it and kept by every change of
// its settings; the last change is when its settings last changed.
func TestGroupTimes(t *testing.T) {
	st := newFlakyStorage(t)
	clock := newTestClock()
	r := startRegistry(t, st, clock, webConfig())
	g := mustCreate(t, r, apiGroup("api", 80))
	created, updated := g.Times()
	if !created.Equal(clock.Now()) || !updated.Equal(created) {
		t.Fatalf("times %s %s, want both %s", created, updated, clock.Now())
	}
	clock.Advance(time.Minute)
	// Writing the change takes time: what the node answers is what it
	// stored, not the time the write ended.
	at := clock.Now()
	st.setFail(func(context.Context, string, string) error {
		clock.Advance(5 * time.Millisecond)
		return nil
	})
	must(t, r.ModifyTags("api", map[string]string{"team": "web"}, nil))
	st.setFail(nil)
	created2, updated2 := g.Times()
	if !created2.Equal(created) || !updated2.Equal(at) {
		t.Fatalf("after a change: times %s %s, want %s %s", created2, updated2, created, at)
	}
	must(t, r.Destruct())
	r2 := startRegistry(t, st, clock, webConfig())
	c3, u3 := r2.Group("api").Times()
	if !c3.Equal(created) || !u3.Equal(updated2) {
		t.Fatalf("after a restart: times %s %s, want %s %s", c3, u3, created, updated2)
	}
}

// ModifyTags adds, overwrites and removes; removing an absent key is no
// error; a result beyond AWS's tag rules is refused whole; a config group's
// tags belong to the config.
func TestModifyTags(t *testing.T) {
	r := startRegistry(t, newFlakyStorage(t), newTestClock(), webConfig())
	g := mustCreate(t, r, apiGroup("api", 80))
	must(t, r.ModifyTags("api", map[string]string{"a": "1", "b": "2"}, nil))
	must(t, r.ModifyTags("api", map[string]string{"a": "3"}, []string{"b", "absent"}))
	if tags := g.Describe().Tags; len(tags) != 1 || tags["a"] != "3" {
		t.Fatalf("tags %v", tags)
	}
	if err := r.ModifyTags("api", map[string]string{"aws:x": "1"}, nil); !IsValidationError(err) {
		t.Fatalf("an aws: key: %v", err)
	}
	if tags := g.Describe().Tags; len(tags) != 1 {
		t.Fatalf("a refused change changed the tags: %v", tags)
	}
	if err := r.ModifyTags("api", nil, nil); !IsValidationError(err) {
		t.Fatalf("an empty change: %v", err)
	}
	expectRefusal(t, "tagging a config group", r.ModifyTags("web", map[string]string{"a": "1"}, nil), KindNotPermitted)
	if err := r.ModifyTags("nope", map[string]string{"a": "1"}, nil); KindOf(err) != KindNotFound {
		t.Fatalf("tagging a missing group: %v", err)
	}
}

// Creating an existing name with identical settings answers the existing
// group whatever its tags (tags are no setting), unless the API's names
// are unique (VPC Lattice), and other settings are a duplicate name.
func TestCreateExistingName(t *testing.T) {
	r := startRegistry(t, newFlakyStorage(t), newTestClock(), webConfig())
	g := mustCreate(t, r, apiGroup("api", 80))
	must(t, r.ModifyTags("api", map[string]string{"team": "web"}, nil))
	again := apiGroup("api", 80)
	again.Tags = map[string]string{"other": "x"}
	if got, created, err := r.CreateGroup(again); err != nil || created || got != g {
		t.Fatalf("a repeat with other tags: %v %v %v", got, created, err)
	}
	if tags := g.Describe().Tags; len(tags) != 1 || tags["team"] != "web" {
		t.Fatalf("a repeat changed the tags: %v", tags)
	}
	_, _, err := r.CreateGroup(apiGroup("api", 81))
	expectRefusal(t, "other settings", err, KindDuplicateName)
	unique := apiGroup("api", 80)
	unique.UniqueName = true
	_, _, err = r.CreateGroup(unique)
	expectRefusal(t, "a unique name", err, KindDuplicateName)
}

// A group created on one node of a fleet under ELBv2's name rule, and
// tagged there, is on every node with the same id, times and tags.
func TestAWSGroupAcrossTheFleet(t *testing.T) {
	f := newTestFleet(t, "a", "b")
	req := apiGroup("Web-API", 80)
	req.NameRule = ValidateELBv2Name
	req.VPCID = "vpc-12345678"
	g := mustCreate(t, f.nodes["a"], req)
	f.clock.Advance(time.Second)
	must(t, f.nodes["a"].ModifyTags("Web-API", map[string]string{"team": "web"}, nil))
	f.sync()
	peer := f.nodes["b"].Group("Web-API")
	if peer == nil {
		t.Fatal("the ELBv2-named group did not reach node b")
	}
	c1, u1 := g.Times()
	c2, u2 := peer.Times()
	d := peer.Describe()
	if peer.ID() != g.ID() || !c1.Equal(c2) || !u1.Equal(u2) || d.Tags["team"] != "web" || d.VPCID != "vpc-12345678" {
		t.Fatalf("node b: id %s times %s %s tags %v vpc %q; node a: id %s times %s %s", peer.ID(), c2, u2, d.Tags, d.VPCID, g.ID(), c1, u1)
	}
}
