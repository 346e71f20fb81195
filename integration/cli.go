package integration

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The `caddy target-groups` command: the operations of the admin API under
// /target-groups/, named and flagged as the AWS CLI's `aws elbv2` ones. It
// finds the admin endpoint as `caddy stop` and `caddy reload` do, calls it
// with caddycmd.AdminAPIRequest (TCP, unix sockets and file descriptors
// alike) and prints the answer as a table or as the API's JSON. The
// operations are in cli_ops.go, the shorthand syntax of list flags in
// cli_shorthand.go, tables in cli_table.go, waiters in cli_wait.go.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      "target-groups",
		Usage:     "<command> [flags]",
		Short:     "Describes and changes target groups through the admin API, as aws elbv2 does",
		Long:      cliLong,
		CobraFunc: buildCLI,
	})
}

// cliLong is the text of `caddy help target-groups`.
const cliLong = `
Describes and changes the target groups of a running Caddy, and registers
and deregisters their targets, through Caddy's admin API (/target-groups/).
Commands and flags are those of the AWS CLI's "aws elbv2" where it has one.

Commands:

  describe-target-groups [--names <name> ...] [--target-group-arns <arn|id> ...]
  create-target-group --name <name> [--protocol HTTP] [--protocol-version HTTP1]
      [--port 80] [--target-type ip|instance|alb|lambda] [--ip-address-type ipv4]
      [--health-check-* ...] [--matcher HttpCode=200] [--attributes Key=k,Value=v ...]
      [--tags Key=k,Value=v ...] [--client-token <token>]
  modify-target-group --target-group <tg> [--health-check-* ...] [--matcher ...]
  delete-target-group --target-group <tg>
  describe-target-group-attributes --target-group <tg>
  modify-target-group-attributes --target-group <tg> --attributes Key=k,Value=v ...
  register-targets --target-group <tg> --targets Id=<id>[,Port=<port>]
      [,AvailabilityZone=<zone>][,Weight=<1-1000>] ...
  deregister-targets --target-group <tg> --targets Id=<id>[,Port=<port>] ...
  describe-target-health --target-group <tg> [--targets Id=<id>[,Port=<port>] ...]
  wait target-in-service --target-group <tg> [--targets ...] [--timeout 10m]
  wait target-deregistered --target-group <tg> [--targets ...] [--timeout 10m]

<tg> is a group's name, its id (tg-...) or its ARN; --target-group-arn is
accepted too. The health check flags are --health-check-protocol,
--health-check-port (traffic-port or a number), --health-check-path,
--health-check-enabled / --no-health-check-enabled,
--health-check-interval-seconds, --health-check-timeout-seconds,
--healthy-threshold-count and --unhealthy-threshold-count.

List flags (--targets, --attributes, --tags, --names, --target-group-arns)
take several values after one flag, separated by spaces, in the AWS CLI's
shorthand syntax (Id=127.0.0.1,Port=9001; a value may be quoted, 'a,b') or
as JSON ('[{"Id":"127.0.0.1","Port":9001}]'), or file://<path> holding the
JSON. A target without Port gets the group's port.

Every command takes:

  --address <addr>     the admin endpoint; default: the admin address of
                       --config (with --adapter), else the CADDY_ADMIN
                       environment variable, else localhost:2019
  --output table|json  a table (default), or the admin API's JSON, indented

The waiters poll every --poll-interval (default 1s) until every target
asked about (every target of the group without --targets) is healthy (or
unavailable: health checks off, it gets traffic), or for
target-deregistered is not registered any more (drained); they give up
after --timeout (default 10m, the 40 polls of 15s of the AWS CLI's waiters).

Exit status: 0 on success; 1 on failure, with
"An error occurred (<Code>): <message>" on stderr, <Code> being the admin
API's error.code (ResourceNotFoundException, ValidationException,
OperationNotPermitted, ...), EndpointConnectionError when the admin endpoint
cannot be reached, ParamValidation for flags the command cannot read;
255 when a waiter times out, as the AWS CLI's waiters do.
`

const cliExample = `  $ caddy target-groups create-target-group --name api --port 9101 \
      --health-check-path /health --health-check-interval-seconds 10
  $ caddy target-groups register-targets --target-group api \
      --targets Id=127.0.0.1,Port=9001,AvailabilityZone=a Id=127.0.0.1,Port=9002
  $ caddy target-groups wait target-in-service --target-group api --timeout 2m
  $ caddy target-groups describe-target-health --target-group api
  $ caddy target-groups modify-target-group-attributes --target-group api \
      --attributes Key=deregistration_delay.timeout_seconds,Value=30
  $ caddy target-groups deregister-targets --target-group api --targets Id=127.0.0.1,Port=9002
  $ caddy target-groups wait target-deregistered --target-group api --targets Id=127.0.0.1,Port=9002
  $ caddy target-groups describe-target-groups --output json --address localhost:2019`

// cliListFlags are the flags that take several values after one flag.
var cliListFlags = map[string]bool{"targets": true, "attributes": true, "tags": true, "names": true, "target-group-arns": true}

// buildCLI fills in the target-groups command: one sub-command per
// operation, and `wait` with its waiters.
func buildCLI(cmd *cobra.Command) {
	cmd.Example = cliExample
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.RunE = cliGroupCommand
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return cliFail(cmd, paramErrorf("%v", err)) })
	// An unknown command with flags is reported as an unknown command.
	cmd.FParseErrWhitelist.UnknownFlags = true
	for _, op := range cliOperations() {
		cmd.AddCommand(op.command())
	}
	wait := &cobra.Command{
		Use:           "wait <waiter> [flags]",
		Short:         "Waits until targets are in service or deregistered",
		Long:          "Polls DescribeTargetHealth until the waiter's condition holds (exit status 0) or --timeout passes (255).",
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE:          cliGroupCommand,
	}
	wait.FParseErrWhitelist.UnknownFlags = true
	for _, op := range cliWaiters() {
		wait.AddCommand(op.command())
	}
	cmd.AddCommand(wait)
}

// cliGroupCommand runs a command that only groups others: help without
// arguments, a failure for an unknown sub-command.
func cliGroupCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return pflag.ErrHelp // cobra prints the help
	}
	return cliFail(cmd, paramErrorf("unknown command %q for %q (see caddy help %s)", args[0], cmd.CommandPath(), helpPath(cmd)))
}

// helpPath is what follows `caddy help` for the help of cmd.
func helpPath(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// cliOp is one command: its flags and what it does.
type cliOp struct {
	name, short, long string
	// group: the command acts on one group (--target-group).
	group bool
	flags func(fs *pflag.FlagSet)
	run   func(c *cliCall) error
}

// command builds the cobra command of op. It parses its flags itself
// (DisableFlagParsing), so that a list flag can take several values.
func (op cliOp) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:                op.name + " [flags]",
		Short:              op.short,
		Long:               strings.TrimSpace(op.short + ".\n\n" + op.long),
		DisableFlagParsing: true,
		SilenceErrors:      true,
		SilenceUsage:       true,
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	if op.group {
		fs.String("target-group", "", "the target group, by `name|id|arn`")
		fs.String("target-group-arn", "", "the same as --target-group (the AWS CLI's name), by `name|id|arn`")
	}
	if op.flags != nil {
		op.flags(fs)
	}
	fs.String("address", "", "the admin endpoint (default: --config's admin address, else CADDY_ADMIN, else localhost:2019)")
	fs.StringP("config", "c", "", "a config `file` whose admin address to use")
	fs.StringP("adapter", "a", "", "the config adapter of --config (default: caddyfile for a Caddyfile)")
	fs.String("output", "table", "the output, `table|json`")
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return op.execute(cmd, args) }
	return cmd
}

func (op cliOp) execute(cmd *cobra.Command, args []string) error {
	fs := cmd.Flags()
	if err := fs.Parse(spreadListArgs(args, cliListFlags)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return cliFail(cmd, paramErrorf("%v", err))
	}
	if help, _ := fs.GetBool("help"); help {
		return pflag.ErrHelp
	}
	if fs.NArg() > 0 {
		return cliFail(cmd, paramErrorf("unexpected argument %q: every parameter is a flag (see caddy help %s)", fs.Arg(0), helpPath(cmd)))
	}
	c, err := newCLICall(cmd)
	if err != nil {
		return cliFail(cmd, err)
	}
	if err := op.run(c); err != nil {
		return cliFail(cmd, err)
	}
	return nil
}

// spreadListArgs rewrites the values that follow a list flag
// (--targets a b) as that flag given once per value (--targets=a
// --targets=b), which pflag reads.
func spreadListArgs(args []string, lists map[string]bool) []string {
	out := make([]string, 0, len(args))
	list := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "-") && a != "-":
			list = ""
			name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || !lists[name] {
				out = append(out, a)
				continue
			}
			list = name
			switch {
			case hasValue:
				out = append(out, "--"+name+"="+value)
			case i+1 < len(args) && !strings.HasPrefix(args[i+1], "--"):
				i++
				out = append(out, "--"+name+"="+args[i])
			default:
				out = append(out, a) // pflag reports the missing value
			}
		case list != "":
			out = append(out, "--"+list+"="+a)
		default:
			out = append(out, a)
		}
	}
	return out
}

// cliError is a failure as the AWS CLI prints it.
type cliError struct {
	code, message string
}

func (e *cliError) Error() string {
	return fmt.Sprintf("An error occurred (%s): %s", e.code, e.message)
}

// cliWaiterError is a waiter that gave up; the AWS CLI exits 255 then.
type cliWaiterError struct {
	waiter, message string
}

func (e *cliWaiterError) Error() string {
	return fmt.Sprintf("Waiter %s failed: %s", e.waiter, e.message)
}

// The codes of failures found by the command itself.
const (
	codeParamValidation = "ParamValidation"
	codeEndpoint        = "EndpointConnectionError"
)

func paramErrorf(format string, args ...any) error {
	return &cliError{codeParamValidation, fmt.Sprintf(format, args...)}
}

// errCLIReported is a failure already printed on stderr.
var errCLIReported = errors.New("target-groups: failed")

// cliFail prints err on stderr and returns what makes caddy exit with the
// status of the failure: 255 for a waiter that timed out, 1 otherwise.
func cliFail(cmd *cobra.Command, err error) error {
	var we *cliWaiterError
	var ce *cliError
	switch {
	case errors.As(err, &we):
		fmt.Fprintln(cmd.ErrOrStderr(), we.Error())
		// caddycmd turns a status above 1 into its own exit error, which
		// its Main exits with; cobra does not print it (SilenceErrors).
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return 255, nil })(cmd, nil)
	case errors.As(err, &ce):
		fmt.Fprintln(cmd.ErrOrStderr(), ce.Error())
	default:
		fmt.Fprintln(cmd.ErrOrStderr(), (&cliError{"Unknown", err.Error()}).Error())
	}
	return errCLIReported
}

// cliCall is one run of a command: its flags, where the admin endpoint is,
// and where to print.
type cliCall struct {
	fs     *pflag.FlagSet
	addr   string
	output string
	out    io.Writer
}

func newCLICall(cmd *cobra.Command) (*cliCall, error) {
	fs := cmd.Flags()
	c := &cliCall{fs: fs, out: cmd.OutOrStdout()}
	c.output, _ = fs.GetString("output")
	if c.output != "table" && c.output != "json" {
		return nil, paramErrorf("--output %q: must be table or json", c.output)
	}
	address, _ := fs.GetString("address")
	config, _ := fs.GetString("config")
	adapter, _ := fs.GetString("adapter")
	if adapter != "" && config == "" {
		return nil, paramErrorf("--adapter needs --config")
	}
	var cfg []byte
	if address == "" && config != "" {
		var err error
		if cfg, err = adaptConfig(config, adapter); err != nil {
			return nil, paramErrorf("finding the admin address in --config %s: %v", config, err)
		}
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, cfg, config, adapter)
	if err != nil {
		return nil, paramErrorf("finding the admin address in --config %s: %v", config, err)
	}
	c.addr = addr
	return c, nil
}

// adaptConfig reads a config file as caddycmd.LoadConfig does (a file
// named Caddyfile* or *.caddyfile goes through the caddyfile adapter), but
// without logging that it does, so that a command prints only its answer.
func adaptConfig(file, adapter string) ([]byte, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if base := filepath.Base(file); adapter == "" && (strings.HasPrefix(base, "Caddyfile") || filepath.Ext(base) == ".caddyfile") {
		adapter = "caddyfile"
	}
	if adapter == "" {
		return body, nil
	}
	a := caddyconfig.GetAdapter(adapter)
	if a == nil {
		return nil, fmt.Errorf("unrecognized config adapter: %s", adapter)
	}
	out, _, err := a.Adapt(body, map[string]any{"filename": file})
	if err != nil {
		return nil, fmt.Errorf("adapting config using %s: %v", adapter, err)
	}
	if len(out) == 0 {
		out = []byte("{}")
	}
	return out, nil
}

// str, num, list and set read flags of the call.
func (c *cliCall) str(name string) string { v, _ := c.fs.GetString(name); return v }
func (c *cliCall) num(name string) int    { v, _ := c.fs.GetInt(name); return v }
func (c *cliCall) list(name string) []string {
	v, _ := c.fs.GetStringArray(name)
	return v
}
func (c *cliCall) set(name string) bool { return c.fs.Changed(name) }
