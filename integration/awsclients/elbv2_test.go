package awsclients

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"
)

// The ELBv2 Query API of a built Caddy, driven by aws-sdk-go-v2's
// elasticloadbalancingv2 client exactly as it drives AWS, its endpoint
// set to <admin>/elbv2.

// elbv2Client is an SDK client of c's ELBv2 API with the given
// credentials: Caddy verifies no signature, so anonymous (unsigned) calls
// and any static keys both work.
func elbv2Client(c *caddy, creds aws.CredentialsProvider) *elbv2.Client {
	return elbv2.New(elbv2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(c.admin + "/elbv2"),
		Credentials:  creds,
	})
}

func dummyCredentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "")
}

func target(b backend) types.TargetDescription {
	return types.TargetDescription{Id: aws.String("127.0.0.1"), Port: aws.Int32(int32(b.port))}
}

// A group's whole life through the SDK: created, two backends registered
// and in service (the SDK's own waiter), traffic through Caddy to both, one
// deregistered (the SDK's waiter again) and out of the traffic.
func TestELBv2SDKLifecycle(t *testing.T) {
	c := startCaddy(t, []string{"web"}, nil)
	ctx := context.Background()
	signed, anon := elbv2Client(c, dummyCredentials()), elbv2Client(c, aws.AnonymousCredentials{})
	one, two := newBackend(t, "one"), newBackend(t, "two")

	created, err := signed.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{
		Name:            aws.String("web"),
		Protocol:        types.ProtocolEnumHttp,
		Port:            aws.Int32(80),
		TargetType:      types.TargetTypeEnumIp,
		VpcId:           aws.String("vpc-0123456789abcdef0"),
		HealthCheckPath: aws.String("/health"),
		Matcher:         &types.Matcher{HttpCode: aws.String("200-299")},
		Tags:            []types.Tag{{Key: aws.String("team"), Value: aws.String("web")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := created.TargetGroups[0]
	arn := aws.ToString(g.TargetGroupArn)
	if !strings.HasPrefix(arn, "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/web/") || aws.ToInt32(g.HealthCheckIntervalSeconds) != 30 ||
		g.TargetType != types.TargetTypeEnumIp || aws.ToString(g.HealthCheckPort) != "traffic-port" || aws.ToString(g.Matcher.HttpCode) != "200-299" ||
		g.LoadBalancerArns == nil || len(g.LoadBalancerArns) != 0 || g.IpAddressType != types.TargetGroupIpAddressTypeEnumIpv4 {
		t.Fatalf("created %+v", g)
	}
	modified, err := anon.ModifyTargetGroup(ctx, &elbv2.ModifyTargetGroupInput{TargetGroupArn: &arn, HealthCheckIntervalSeconds: aws.Int32(10), HealthyThresholdCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if m := modified.TargetGroups[0]; aws.ToInt32(m.HealthCheckIntervalSeconds) != 10 || aws.ToInt32(m.HealthyThresholdCount) != 2 || aws.ToString(m.HealthCheckPath) != "/health" {
		t.Fatalf("modified %+v", m)
	}
	// Draining would hold the deregistered target for 300 s.
	if _, err := anon.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{
		TargetGroupArn: &arn,
		Attributes:     []types.TargetGroupAttribute{{Key: aws.String("deregistration_delay.timeout_seconds"), Value: aws.String("0")}},
	}); err != nil {
		t.Fatal(err)
	}
	attrs, err := signed.DescribeTargetGroupAttributes(ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: &arn})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range attrs.Attributes {
		got[aws.ToString(a.Key)] = aws.ToString(a.Value)
	}
	if got["deregistration_delay.timeout_seconds"] != "0" || got["stickiness.type"] != "lb_cookie" {
		t.Fatalf("attributes %v", got)
	}
	if _, err := anon.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: &arn, Targets: []types.TargetDescription{target(one), target(two)}}); err != nil {
		t.Fatal(err)
	}
	both := &elbv2.DescribeTargetHealthInput{TargetGroupArn: &arn, Targets: []types.TargetDescription{target(one), target(two)}}
	inService := elbv2.NewTargetInServiceWaiter(anon, func(o *elbv2.TargetInServiceWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, time.Second
	})
	if err := inService.Wait(ctx, both, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.servedBy("/web/", "one", "two")

	health, err := signed.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: &arn})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(health.TargetHealthDescriptions); n != 2 {
		t.Fatalf("%d targets: %+v", n, health.TargetHealthDescriptions)
	}
	for _, d := range health.TargetHealthDescriptions {
		if d.TargetHealth.State != types.TargetHealthStateEnumHealthy || aws.ToString(d.HealthCheckPort) != fmt.Sprint(aws.ToInt32(d.Target.Port)) || d.AnomalyDetection != nil {
			t.Fatalf("target %+v health %+v", d.Target, d.TargetHealth)
		}
	}

	gone := &elbv2.DescribeTargetHealthInput{TargetGroupArn: &arn, Targets: []types.TargetDescription{target(one)}}
	if _, err := anon.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: &arn, Targets: gone.Targets}); err != nil {
		t.Fatal(err)
	}
	deregistered := elbv2.NewTargetDeregisteredWaiter(anon, func(o *elbv2.TargetDeregisteredWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, time.Second
	})
	if err := deregistered.Wait(ctx, gone, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if status, body := c.get("/web/"); status != http.StatusOK || body != "hello from two" {
			t.Fatalf("after deregistering one: %d %q", status, body)
		}
	}

	// The route uses the group: it can't be deleted until the route goes.
	_, err = anon.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: &arn})
	var inUse *types.ResourceInUseException
	if !errors.As(err, &inUse) {
		t.Fatalf("deleting a routed group: %v", err)
	}
}

// The errors a user meets first are the SDK's typed errors, with messages
// that say what is wrong.
func TestELBv2SDKErrors(t *testing.T) {
	c := startCaddy(t, nil, nil)
	ctx := context.Background()
	client := elbv2Client(c, aws.AnonymousCredentials{})
	created, err := client.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("api"), TargetType: types.TargetTypeEnumIp, Protocol: types.ProtocolEnumHttp, Port: aws.Int32(9000)})
	if err != nil {
		t.Fatal(err)
	}
	arn := created.TargetGroups[0].TargetGroupArn

	_, err = client.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{"nosuch"}})
	var notFound *types.TargetGroupNotFoundException
	if !errors.As(err, &notFound) || notFound.ErrorCode() != "TargetGroupNotFound" || notFound.ErrorFault() != smithy.FaultClient || !strings.Contains(notFound.ErrorMessage(), `"nosuch"`) {
		t.Fatalf("describing a missing group: %v", err)
	}
	_, err = client.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nosuch/0123456789abcdef"),
		Targets: []types.TargetDescription{{Id: aws.String("127.0.0.1")}}})
	if !errors.As(err, &notFound) {
		t.Fatalf("registering with a missing group: %v", err)
	}

	_, err = client.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("api"), TargetType: types.TargetTypeEnumIp, Protocol: types.ProtocolEnumHttp, Port: aws.Int32(9001)})
	var dup *types.DuplicateTargetGroupNameException
	if !errors.As(err, &dup) {
		t.Fatalf("creating a group of a taken name: %v", err)
	}

	_, err = client.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: arn, Targets: []types.TargetDescription{{Id: aws.String("10.0.0.1")}, {Id: aws.String("8.8.8.8")}}})
	var invalid *types.InvalidTargetException
	if !errors.As(err, &invalid) || !strings.Contains(invalid.ErrorMessage(), "Targets.member.2.Id: 8.8.8.8") {
		t.Fatalf("registering a public address: %v", err)
	}
	// All or nothing: the valid target of the refused call is not registered.
	health, err := client.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: arn})
	if err != nil || len(health.TargetHealthDescriptions) != 0 {
		t.Fatalf("after a refused registration: %v %+v", err, health)
	}

	_, err = client.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("api2"), TargetType: types.TargetTypeEnumIp, HealthCheckIntervalSeconds: aws.Int32(4)})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ValidationError" || apiErr.ErrorMessage() != "HealthCheckIntervalSeconds: 4 is outside 5-300" {
		t.Fatalf("an interval out of range: %v", err)
	}

	_, err = client.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: arn,
		Attributes: []types.TargetGroupAttribute{{Key: aws.String("slow_start.duration_seconds"), Value: aws.String("10")}}})
	var badConfig *types.InvalidConfigurationRequestException
	if !errors.As(err, &badConfig) || !strings.Contains(badConfig.ErrorMessage(), "30-900") {
		t.Fatalf("a slow start out of range: %v", err)
	}

	fn, err := client.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("fn"), TargetType: types.TargetTypeEnumLambda})
	if err != nil {
		t.Fatal(err)
	}
	fnARN := fn.TargetGroups[0].TargetGroupArn
	if _, err := client.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: fnARN, Targets: []types.TargetDescription{{Id: aws.String("echo")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = client.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: fnARN, Targets: []types.TargetDescription{{Id: aws.String("other")}}})
	var tooMany *types.TooManyTargetsException
	if !errors.As(err, &tooMany) {
		t.Fatalf("a second lambda target: %v", err)
	}

	_, err = client.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: aws.String("arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/lb/0123456789abcdef")})
	var noLB *types.LoadBalancerNotFoundException
	if !errors.As(err, &noLB) {
		t.Fatalf("groups of a load balancer: %v", err)
	}

	// Deleting is idempotent: a group deleted already is no error.
	for range 2 {
		if _, err := client.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: fnARN}); err != nil {
			t.Fatal(err)
		}
	}
}

// Tags round-trip through AddTags, DescribeTags and RemoveTags, and
// DescribeTargetGroups pages with the SDK's paginator.
func TestELBv2SDKTagsAndPages(t *testing.T) {
	c := startCaddy(t, nil, nil)
	ctx := context.Background()
	client := elbv2Client(c, dummyCredentials())
	var arns []string
	for i := range 5 {
		out, err := client.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("Group-%d", i)), TargetType: types.TargetTypeEnumIp, Port: aws.Int32(int32(9100 + i))})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, aws.ToString(out.TargetGroups[0].TargetGroupArn))
	}

	if _, err := client.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: arns[:2], Tags: []types.Tag{
		{Key: aws.String("env"), Value: aws.String("dev")}, {Key: aws.String("team"), Value: aws.String("web")},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RemoveTags(ctx, &elbv2.RemoveTagsInput{ResourceArns: arns[1:2], TagKeys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	tags, err := client.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: arns[:3]})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range tags.TagDescriptions {
		var kv []string
		for _, tag := range d.Tags {
			kv = append(kv, aws.ToString(tag.Key)+"="+aws.ToString(tag.Value))
		}
		got = append(got, fmt.Sprintf("%s:%s", strings.Split(aws.ToString(d.ResourceArn), "/")[1], strings.Join(kv, ",")))
	}
	if strings.Join(got, " ") != "Group-0:env=dev,team=web Group-1:env=dev Group-2:" {
		t.Fatalf("tags %v", got)
	}
	_, err = client.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: arns[:1], Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("1")}, {Key: aws.String("k"), Value: aws.String("2")}}})
	var dupKeys *types.DuplicateTagKeysException
	if !errors.As(err, &dupKeys) {
		t.Fatalf("a tag key twice: %v", err)
	}

	pages := elbv2.NewDescribeTargetGroupsPaginator(client, &elbv2.DescribeTargetGroupsInput{PageSize: aws.Int32(2)})
	var names []string
	n := 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, g := range page.TargetGroups {
			names = append(names, aws.ToString(g.TargetGroupName))
		}
	}
	if n != 3 || strings.Join(names, " ") != "Group-0 Group-1 Group-2 Group-3 Group-4" {
		t.Fatalf("%d pages: %v", n, names)
	}
}
