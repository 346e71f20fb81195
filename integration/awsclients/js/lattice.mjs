// Drives Caddy's VPC Lattice API with the AWS SDK for JavaScript v3's
// client, unchanged: the flow of the Go SDK's test (lattice_test.go), run
// by js_test.go. The environment names the admin endpoint (ADMIN), the
// site (SITE), the group the site routes (GROUP) and two backends
// (BACKEND_ONE, BACKEND_TWO: ports of servers answering "hello from one",
// "hello from two"). It prints what it saw, and exits 1 at the first
// surprise.
import {
  VPCLatticeClient,
  CreateTargetGroupCommand,
  GetTargetGroupCommand,
  UpdateTargetGroupCommand,
  DeleteTargetGroupCommand,
  RegisterTargetsCommand,
  DeregisterTargetsCommand,
  TagResourceCommand,
  ListTagsForResourceCommand,
  ConflictException,
  ResourceNotFoundException,
  ValidationException,
  paginateListTargets,
  paginateListTargetGroups,
} from "@aws-sdk/client-vpc-lattice";
import { get } from "node:http";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const admin = env("ADMIN");
const site = env("SITE");
const group = env("GROUP");
const one = Number(env("BACKEND_ONE"));
const two = Number(env("BACKEND_TWO"));

const client = new VPCLatticeClient({
  region: "us-east-1",
  // No trailing slash: the SDK would join "//targetgroups", which the
  // admin endpoint redirects.
  endpoint: `${admin}/vpc-lattice`,
  credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
});

function check(cond, what, value) {
  if (!cond) {
    console.error(`FAIL: ${what}: ${JSON.stringify(value)}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

async function expectError(type, what, call) {
  try {
    await call();
  } catch (err) {
    check(err instanceof type, `${what} is ${type.name}`, { name: err.name, message: err.message });
    return err;
  }
  check(false, `${what} fails`, null);
}

// waitFor polls cond until it holds, or fails after timeoutMs.
async function waitFor(what, timeoutMs, cond) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) check(false, `${what} within ${timeoutMs} ms`, null);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function statuses(id) {
  const out = {};
  for await (const page of paginateListTargets({ client, pageSize: 1 }, { targetGroupIdentifier: id })) {
    for (const it of page.items) out[`${it.id}:${it.port}`] = it.status;
  }
  return out;
}

const created = await client.send(
  new CreateTargetGroupCommand({
    name: group,
    type: "IP",
    config: {
      port: one,
      protocol: "HTTP",
      protocolVersion: "HTTP1",
      ipAddressType: "IPV4",
      vpcIdentifier: "vpc-0123456789abcdef0",
      healthCheck: {
        enabled: true,
        protocol: "HTTP",
        protocolVersion: "HTTP1",
        path: "/",
        healthCheckIntervalSeconds: 5,
        healthCheckTimeoutSeconds: 2,
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 2,
        matcher: { httpCode: "200" },
      },
    },
    tags: { env: "test" },
  }),
);
console.log("CreateTargetGroup:", JSON.stringify({ ...created, $metadata: { httpStatusCode: created.$metadata.httpStatusCode } }));
check(created.$metadata.httpStatusCode === 201 && created.status === "ACTIVE" && /^tg-[0-9a-f]{17}$/.test(created.id), "CreateTargetGroup answers 201 ACTIVE with an id", created);
check(created.arn === `arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/${created.id}`, "the ARN is Lattice's", created.arn);
check(created.config.healthCheck.matcher.httpCode === "200" && created.config.healthCheck.healthCheckIntervalSeconds === 5, "the health check is as asked", created.config.healthCheck);

// node:http rather than fetch, whose Sec-Fetch-Mode header makes Caddy's
// admin endpoint check the request's origin.
const view = await new Promise((resolve, reject) => {
  get(`${admin}/target-groups/${group}`, (res) => {
    let body = "";
    res.on("data", (d) => (body += d));
    res.on("end", () => resolve(JSON.parse(body)));
  }).on("error", reject);
});
check(view.id === created.id, "the JSON API sees the same group", view);

const reg = await client.send(
  new RegisterTargetsCommand({
    targetGroupIdentifier: created.arn,
    targets: [{ id: "127.0.0.1" }, { id: "127.0.0.1", port: two }],
  }),
);
check(reg.successful.length === 2 && reg.unsuccessful.length === 0, "RegisterTargets registers both", reg);

await waitFor("both targets HEALTHY", 30000, async () => {
  const s = await statuses(created.id);
  return s[`127.0.0.1:${one}`] === "HEALTHY" && s[`127.0.0.1:${two}`] === "HEALTHY";
});
console.log("ok: both targets HEALTHY");

const seen = new Set();
await waitFor("traffic reaching both backends", 20000, async () => {
  const res = await fetch(`${site}/${group}/`);
  if (res.status === 200) seen.add(await res.text());
  return seen.has("hello from one") && seen.has("hello from two");
});
console.log("ok: traffic reaches both backends");

const got = await client.send(new GetTargetGroupCommand({ targetGroupIdentifier: created.id }));
check(got.createdAt instanceof Date && got.lastUpdatedAt instanceof Date && Array.isArray(got.serviceArns), "GetTargetGroup has the times", got);

const ids = [];
for await (const page of paginateListTargetGroups({ client, pageSize: 1 }, { targetGroupType: "IP" })) {
  for (const it of page.items) ids.push(it.id);
}
check(ids.includes(created.id), "ListTargetGroups lists it", ids);

const upd = await client.send(new UpdateTargetGroupCommand({ targetGroupIdentifier: created.id, healthCheck: { healthyThresholdCount: 3 } }));
check(upd.config.healthCheck.healthyThresholdCount === 3 && upd.config.healthCheck.healthCheckIntervalSeconds === 5, "UpdateTargetGroup changes the named member only", upd.config);

await client.send(new TagResourceCommand({ resourceArn: created.arn, tags: { team: "web" } }));
const tags = await client.send(new ListTagsForResourceCommand({ resourceArn: created.arn }));
check(tags.tags.team === "web" && tags.tags.env === "test", "tags are added", tags.tags);

const nf = await expectError(ResourceNotFoundException, "GetTargetGroup of no group", () =>
  client.send(new GetTargetGroupCommand({ targetGroupIdentifier: "tg-0123456789abcdef0" })),
);
check(nf.resourceId === "tg-0123456789abcdef0" && nf.resourceType === "TARGET_GROUP", "it names the resource", nf);
await expectError(ConflictException, "CreateTargetGroup of a taken name", () =>
  client.send(new CreateTargetGroupCommand({ name: group, type: "IP" })),
);
const ve = await expectError(ValidationException, "CreateTargetGroup with bad members", () =>
  client.send(new CreateTargetGroupCommand({ name: "bad-group", type: "IP", config: { protocol: "UDP" } })),
);
check(ve.reason === "fieldValidationFailed" && ve.fieldList[0].name === "config.protocol", "it names the field", ve.fieldList);
const bad = await client.send(new RegisterTargetsCommand({ targetGroupIdentifier: created.id, targets: [{ id: "8.8.8.8" }] }));
check(bad.unsuccessful.length === 1 && bad.unsuccessful[0].failureCode === "InvalidTarget", "a public address is unsuccessful", bad);

const dereg = await client.send(new DeregisterTargetsCommand({ targetGroupIdentifier: created.id, targets: [{ id: "127.0.0.1" }] }));
check(dereg.successful.length === 1 && dereg.successful[0].port === one, "DeregisterTargets deregisters one", dereg);
const after = await statuses(created.id);
check(after[`127.0.0.1:${one}`] === "DRAINING" && after[`127.0.0.1:${two}`] === "HEALTHY", "the deregistered target drains", after);
for (let i = 0; i < 10; i++) {
  const res = await fetch(`${site}/${group}/`);
  const body = await res.text();
  check(res.status === 200 && body === "hello from two", `request ${i + 1} after deregistering goes to two`, body);
}

const scratch = await client.send(new CreateTargetGroupCommand({ name: "scratch-lattice", type: "LAMBDA" }));
check(scratch.config.lambdaEventStructureVersion === "V1", "LAMBDA groups default to event structure V1", scratch.config);
for (let i = 0; i < 2; i++) {
  const del = await client.send(new DeleteTargetGroupCommand({ targetGroupIdentifier: scratch.arn }));
  check(del.id === scratch.id && del.status === "DELETE_IN_PROGRESS", `DeleteTargetGroup #${i + 1}`, del);
}
await expectError(ResourceNotFoundException, "GetTargetGroup of a deleted group", () =>
  client.send(new GetTargetGroupCommand({ targetGroupIdentifier: scratch.id })),
);
console.log("PASS");
