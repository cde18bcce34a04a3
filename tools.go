package httpguard

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// This file prices the tools a provider runs on its own side and bills per
// call besides the tokens: web search (about $10 per 1,000 searches at
// Anthropic and OpenAI), file search, code execution. A request declares
// them in tools (chat completions' web_search_options searches too); the
// Budget reserves their calls at the fees of BudgetConfig.ToolPrices and
// charges what the answer counts (Anthropic's usage.server_tool_use, the
// call items of an OpenAI Responses output), or the reservation when it
// counts nothing (OpenAI's chat completions). OpenAI's code_interpreter
// and hosted shell bill a container rather than calls: one a response,
// at a fee by its memory_limit (see serverTool.Container), reserved and
// charged whatever the answer lists.

// serverTools is what a request body says of the tools it declares other
// than functions (whose calls the caller's code runs).
type serverTools struct {
	List []serverTool
	// MaxToolCalls is OpenAI Responses' max_tool_calls, a bound on the
	// calls of all built-in tools together; 0 when unset.
	MaxToolCalls int64
	// Reserve is what a Budget reserved for the calls' fees (see
	// toolReserve), Containers the part of it for containers, charged
	// whatever the answer counts; ResultTokens, the input tokens it
	// reserved for what the calls return to the model (see
	// toolResultTokens).
	Reserve, Containers Money
	ResultTokens        int64
}

// serverTool is one tool a request declares other than a function.
type serverTool struct {
	Type    string // as declared, lowercased; "web_search" for web_search_options
	MaxUses int64  // Anthropic's max_uses; 0 when unset
	// MaxContentTokens is Anthropic's max_content_tokens, web_fetch's
	// bound on what a call returns (read on any tool, but bounding only
	// web_fetch's results: no other tool has it); 0 when unset.
	MaxContentTokens int64
	// Container is, for a tool that OpenAI runs in a container it bills
	// per container session rather than per call (code_interpreter, and a
	// shell with a hosted environment), the container's memory in GB: its
	// memory_limit, 1 (the default) without one, the largest size when the
	// request names an existing container, whose size it does not say. It
	// is 0 for the other tools.
	Container int64
}

// hostedShell is the type of OpenAI's shell tool with a hosted
// environment, and its ToolPrices key; a shell without one, which the
// client runs, is read as a local_shell (see toolReader).
const hostedShell = "shell"

// codeInterpreterTool is the ToolPrices key of OpenAI's Code Interpreter,
// whose fee prices a hosted shell's container too when "shell" has none:
// OpenAI bills both containers alike.
const codeInterpreterTool = "code_interpreter"

// containerSizes are the memory_limit values OpenAI takes for a container,
// and their GB: the fee of a container (its ToolPrices entry, that of the
// default 1 GB one) is scaled by them, as OpenAI's fees are ($0.03 for
// 1 GB, $0.12 for 4 GB, $0.48 for 16 GB, $1.92 for 64 GB, a session).
var containerSizes = [...]struct {
	name string
	gb   int64
}{{"1g", 1}, {"4g", 4}, {"16g", 16}, {"64g", 64}}

// largestContainer is the GB a container of unknown size is priced at.
const largestContainer = 64

// webSearchTool is the ToolPrices key of web searches, which chat
// completions' web_search_options asks for.
const webSearchTool = "web_search"

// ToolCalls counts the calls of the server tools a provider bills per
// call, as an answer reports them: Anthropic's usage.server_tool_use
// (web_search_requests, web_fetch_requests; OpenRouter reports it too),
// Perplexity's usage.num_search_queries (as WebSearch, when the usage
// has no web_search_requests), or the items of an OpenAI Responses answer's output that record a call
// (web_search_call, file_search_call, code_interpreter_call,
// image_generation_call; shell_call_output, counted in HostedShell). The
// zero value counts none.
type ToolCalls struct {
	WebSearch, WebFetch, FileSearch, CodeInterpreter, ImageGeneration int64
	// HostedShell counts the shell_call_output items of an OpenAI
	// Responses output: calls OpenAI ran itself, in a container it bills
	// (the answer of a shell the client runs ends at its shell_call). When
	// the request does not declare the shell (a stored prompt's), each is
	// charged the fee of ToolPrices["shell"], else ["code_interpreter"]: a
	// 1 GB container's, its size unknown.
	HostedShell int64
}

// toolKind is a server tool whose calls answers count.
type toolKind uint8

const (
	webSearch toolKind = iota
	webFetch
	fileSearch
	codeInterpreter
	imageGeneration
	hostedShellCalls
	toolKindCount
	notCounted = toolKindCount
)

// toolKinds names each kind: its ToolPrices key (a tool type without its
// date and "_preview"), and the type of the OpenAI Responses output item
// that records one of its calls ("" when none does).
var toolKinds = [toolKindCount]struct{ key, item string }{
	webSearch:        {webSearchTool, "web_search_call"},
	webFetch:         {"web_fetch", ""},
	fileSearch:       {"file_search", "file_search_call"},
	codeInterpreter:  {codeInterpreterTool, "code_interpreter_call"},
	imageGeneration:  {"image_generation", "image_generation_call"},
	hostedShellCalls: {hostedShell, "shell_call_output"},
}

// maxCalls returns, of each kind, the larger of the two counts.
func maxCalls(a, b ToolCalls) ToolCalls {
	for k := range toolKindCount {
		*a.of(k) = max(*a.of(k), *b.of(k))
	}
	return a
}

// callCount gathers the server tool calls that the outputs of one answer
// (an OpenAI Responses answer, or the response objects of its stream's
// events) list: of each kind, the largest count. The zero value has read
// no output.
type callCount struct {
	calls   ToolCalls
	items   int32 // the most items an output listed (an output of at most maxResponseValue bytes)
	counted bool  // an output was counted
	bad     bool  // an output could not be: the calls are unknown
}

// add folds in the calls of one output, of items items; ok is false when
// it could not be counted.
func (c *callCount) add(calls ToolCalls, items int32, ok bool) {
	c.calls, c.items, c.counted, c.bad = maxCalls(c.calls, calls), max(c.items, items), true, c.bad || !ok
}

func (c *callCount) merge(d callCount) {
	if d.counted {
		c.add(d.calls, d.items, !d.bad)
	}
}

// addTo adds the calls counted to u: an output lists every call of the
// kinds it records, so a kind it lists none of counts 0.
func (c *callCount) addTo(u *Usage) {
	if c.counted && !c.bad {
		u.ToolCalls = maxCalls(u.ToolCalls, c.calls)
		u.counted |= outputCounts
	}
}

// of returns the count of kind k.
func (c *ToolCalls) of(k toolKind) *int64 {
	switch k {
	case webSearch:
		return &c.WebSearch
	case webFetch:
		return &c.WebFetch
	case fileSearch:
		return &c.FileSearch
	case codeInterpreter:
		return &c.CodeInterpreter
	case imageGeneration:
		return &c.ImageGeneration
	}
	return &c.HostedShell
}

// none reports whether c counts no call (compared field by field: an
// == on the struct calls memequal).
func (c *ToolCalls) none() bool {
	return c.WebSearch|c.WebFetch|c.FileSearch|c.CodeInterpreter|c.ImageGeneration|c.HostedShell == 0
}

// toolCounts has bit k set for each kind k an answer counted: a count
// left out is not a count of zero.
type toolCounts uint8

// outputCounts are the kinds an OpenAI Responses output counts: it lists
// every call of them.
var outputCounts = func() (set toolCounts) {
	for k, kind := range toolKinds {
		if kind.item != "" {
			set |= 1 << k
		}
	}
	return set
}()

// countOutputCalls counts the calls an OpenAI Responses output array, v
// (valid JSON), lists, and its items; ok is false when v is not an array,
// or an item's type is written under a key servers would read
// differently, or is followed by a value other than a string under
// "type".
func countOutputCalls(v []byte) (calls ToolCalls, items int32, ok bool) {
	if len(v) == 0 || v[0] != '[' {
		return calls, 0, false
	}
	for item := range validElements(v) {
		items++
		var typ []byte // the item's type, raw: the last string under "type"
		for key, value := range validMembers(item) {
			switch matchName(key, bytes.IndexByte(key, '\\') >= 0, "type") {
			case exactMatch:
				if value[0] == '"' {
					typ = value
				} else if typ != nil {
					// A null (or other value) after the type: encoding/json
					// keeps the type, a decoder keeping the last value has
					// none.
					return ToolCalls{}, 0, false
				}
			case foldMatch:
				return ToolCalls{}, 0, false
			}
		}
		var buf [32]byte
		name, _ := unquote(buf[:0], typ)
		for k, kind := range toolKinds {
			if kind.item != "" && string(name) == kind.item {
				*calls.of(toolKind(k))++
			}
		}
	}
	return calls, items, true
}

// toolFields are the fields of a tool object read here: its type, then
// its counts.
var toolFields = []string{"type", "max_uses", "max_content_tokens"}

// placeFields are those that say where a container tool runs:
// code_interpreter's container, a shell's environment. Neither holds a k
// or an s, the only letters a non-ASCII rune folds to, so an unescaped
// key of another length is neither (see toolReader.member).
var placeFields = []string{"container", "environment"}

// containerFields are the fields of a container or environment object
// read here.
var containerFields = []string{"type", "memory_limit"}

// geminiTools are the keys that make a tool one of Gemini's built-in tools
// as LiteLLM and Gemini's own API take them ({"googleSearch": {}}), in
// their two spellings and lowercased; geminiToolTypes (one for each pair)
// are the tool types they are priced as. Gemini's code execution costs
// tokens only, unlike Anthropic's code_execution: it has a type of its
// own.
var (
	geminiTools = []string{
		"googlesearch", "google_search", "googlesearchretrieval", "google_search_retrieval",
		"enterprisewebsearch", "enterprise_web_search", "googlemaps", "google_maps",
		"urlcontext", "url_context", "codeexecution", "code_execution",
	}
	geminiToolTypes = []string{"google_search", "google_search_retrieval", "enterprise_web_search", "google_maps", "url_context", "gemini_code_execution"}
)

// readTools reads a request's tools value (valid JSON) into the tools
// billed on the provider's side, in order, each with a toolReader; the
// first refusal ends it. Functions are left out; so is everything when
// the value is not an array (a server refuses it).
func readTools(tools []byte) ([]serverTool, error) {
	if len(tools) == 0 || tools[0] != '[' {
		return nil, nil
	}
	var list []serverTool
	// validElements' loop, with readTool finding each tool's end as it
	// reads it: a tool's function, most of its bytes, is walked once.
	for i := skipSpace(tools, 1); i < len(tools) && tools[i] != ']'; {
		t, n, err := readTool(tools[i:])
		if err != nil {
			return nil, err
		}
		if !functionTool(t.Type) {
			list = append(list, t)
		}
		i = nextValid(tools, i+n)
	}
	return list, nil
}

// readServerTools reads, after list (the request's tools as readTools
// reads them), its web_search_options value, plugins value, mcp_servers
// value and max_tool_calls value (each valid JSON, or nil when absent).
// It returns nil when the request declares no tool but functions.
func readServerTools(list []serverTool, searchOptions, plugins, mcpServers, maxToolCalls []byte) (*serverTools, error) {
	if len(searchOptions) > 0 && !isJSONNull(searchOptions) {
		list = append(list, serverTool{Type: webSearchTool})
	}
	for range validElements(mcpServers) {
		// Anthropic's MCP connector calls the servers' tools, as an
		// mcp_toolset in tools does (which its newer beta asks for too:
		// the calls of both, unbounded, are counted once, together).
		list = append(list, serverTool{Type: "mcp_toolset"})
		break
	}
	for plugin := range validElements(plugins) {
		t, err := readPlugin(plugin)
		if err != nil {
			return nil, err
		}
		list = append(list, t)
	}
	if list == nil {
		return nil, nil
	}
	calls, err := requestCount(reqMaxToolCalls, maxToolCalls)
	if err != nil {
		return nil, err
	}
	return &serverTools{List: list, MaxToolCalls: calls}, nil
}

// pluginPrefix begins the type of an OpenRouter plugin, its ToolPrices key.
const pluginPrefix = "plugin_"

// webPluginResults is how many results OpenRouter's web plugin fetches
// when its max_results does not say.
const webPluginResults = 5

// pluginFields are the keys of a plugin that readPlugin reads.
var pluginFields = []string{"id", "max_results"}

// readPlugin reads one element of OpenRouter's plugins array as a tool
// billed on the provider's side: "plugin_" and its id, lowercased (a
// plugin without one is "plugin_"). The web plugin bills each result
// (max_results, 5 by default), its uses. A key servers would read
// differently (another case) or a max_results not a number is refused.
func readPlugin(v []byte) (serverTool, error) {
	var id string
	var results []byte
	for key, value := range validMembers(v) {
		i, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, pluginFields)
		switch {
		case m == foldMatch:
			return serverTool{}, fmt.Errorf("request field %q in a plugin: a spelling of %q that some servers read and others ignore: %w",
				appendUnquoted(nil, key), pluginFields[i], errAmbiguousRequest)
		case m == noMatch:
		case i == 0:
			id, _ = jsonString(value)
		default:
			results = value
		}
	}
	t := serverTool{Type: pluginPrefix + strings.ToLower(id)}
	n, err := requestCount(reqPlugins, results)
	if err != nil {
		return serverTool{}, err
	}
	if t.Type == pluginPrefix+"web" {
		t.MaxUses = webPluginResults
		if n > 0 {
			t.MaxUses = n
		}
	}
	return t, nil
}

// readTool reads the element of a tools array that begins v (the rest of
// the array follows it) with a toolReader, and returns where the element
// ends.
func readTool(v []byte) (serverTool, int, error) {
	var tr toolReader
	end := -1
	for key, value := range objectMembers(v, &end) {
		if tr.member(key, bytes.IndexByte(key, '\\') >= 0, value); tr.err != nil {
			return serverTool{}, 0, tr.err
		}
	}
	t, err := tr.result()
	if err != nil {
		return serverTool{}, 0, err
	}
	if end < 0 { // not an object: a function's (see toolReader)
		end = validEnd(v, 0)
	}
	return t, end, nil
}

// toolReader reads one element of a tools array, a member at a time, as
// the server that would bill it most reads it. Its type is the last
// string, other than a function's, under a key servers may read as type
// (in any case: Go's decoder matches keys so; a null after a value: Go's
// keeps the value); without one, a key of Gemini's built-in tools names
// it (see geminiTools); a tool that is not an object or has neither is a
// function's (a server refuses it, or runs it as one). A tool with two of
// Gemini's keys, or one and a type that is not a function's, is refused:
// LiteLLM drops the type and sends the key, others read the type, and
// Gemini's API may run both tools. A count (max_uses,
// max_content_tokens) that servers would read differently (another case,
// a null after a value, not a number) is refused, as the request's own
// counts are; so is a type under "type" that a later one in another
// spelling would replace for some servers. Where OpenAI's container tools
// run is read last, once the type is known (see readContainer): a shell
// without a hosted environment is read as a local_shell, the client's;
// a second container or environment member, or one in another case, is
// refused (encoding/json merges the two objects, other decoders keep the
// last; it reads the key in any case, others as written). The zero value
// has read no member.
type toolReader struct {
	t      serverTool
	counts [2]fieldReading // max_uses, max_content_tokens
	places [2][]byte       // the last container and environment values; nil when absent
	twice  [2]bool         // a container, an environment, given twice or in another case
	exact  string          // the type under the key "type" itself, as a server reading keys as written takes it
	gemini string          // the type a key of Gemini's built-in tools names
	err    error           // the first refusal: nothing after it is read
}

// member reads a member of the tool: its key's raw content (escaped says
// it holds a backslash escape) and its raw value.
func (tr *toolReader) member(key []byte, escaped bool, value []byte) {
	if tr.err != nil {
		return
	}
	if g, m := lookupName(key, escaped, geminiTools); m != noMatch { // in any case: the dearer reading
		if tr.gemini != "" && tr.gemini != geminiToolTypes[g/2] {
			tr.err = fmt.Errorf("a tool names two of Gemini's built-in tools, %q and %q, which servers read differently: %w",
				tr.gemini, geminiToolTypes[g/2], errAmbiguousRequest)
			return
		}
		tr.gemini = geminiToolTypes[g/2]
	}
	i, m := lookupName(key, escaped, toolFields)
	switch {
	case m == noMatch:
		if escaped || len(key) == len(placeFields[0]) || len(key) == len(placeFields[1]) {
			// Where the tool runs, read once its type is known: most keys
			// (a function's name, parameters) are not looked up.
			if j, m := lookupName(key, escaped, placeFields); m != noMatch {
				tr.twice[j] = tr.twice[j] || tr.places[j] != nil || m == foldMatch
				tr.places[j] = value
			}
		}
	case i == 0:
		if typ, ok := toolType(value); ok {
			if !functionTool(typ) {
				tr.t.Type = typ
			}
			if m == exactMatch {
				tr.exact = typ
			}
		}
	case m == foldMatch:
		tr.err = fmt.Errorf("request field %q in a tool: a spelling of %q that some servers read and others ignore: %w",
			appendUnquoted(nil, key), toolFields[i], errAmbiguousRequest)
	default:
		tr.counts[i-1].add(value)
	}
}

// result returns the tool read, or the first refusal.
func (tr *toolReader) result() (serverTool, error) {
	if tr.err != nil {
		return serverTool{}, tr.err
	}
	t := tr.t
	if !functionTool(tr.exact) && tr.exact != t.Type {
		return serverTool{}, fmt.Errorf("a tool's type %q is followed by %q under a spelling of \"type\" that some servers read and others ignore: %w",
			tr.exact, t.Type, errAmbiguousRequest)
	}
	switch {
	case t.Type == "":
		t.Type = tr.gemini
	case tr.gemini != "" && t.Type != tr.gemini:
		return serverTool{}, fmt.Errorf("a tool of type %q names Gemini's built-in tool %q too, which LiteLLM runs in its place: %w",
			t.Type, tr.gemini, errAmbiguousRequest)
	}
	for i, dst := range [...]*int64{&t.MaxUses, &t.MaxContentTokens} {
		if tr.counts[i].ambiguous() {
			return serverTool{}, fmt.Errorf("request field %q in a tool: null after a value, which some servers ignore and others do not: %w", toolFields[i+1], errAmbiguousRequest)
		}
		var err error
		if *dst, err = requestCount(reqTools, tr.counts[i].value); err != nil {
			return serverTool{}, fmt.Errorf("request field %q in a tool is not a number: %w", toolFields[i+1], errAmbiguousRequest)
		}
	}
	if t.Type != "" { // not a function's, the commonest
		if err := tr.readContainer(&t); err != nil {
			return serverTool{}, err
		}
	}
	return t, nil
}

// readContainer reads where t runs when OpenAI runs it in a container:
// code_interpreter's container (an object of type "auto", or none, at its
// memory_limit, 1 GB without one, as when absent; an id, a container made
// earlier with POST /v1/containers, or an object of another type, of a
// size the request does not say: the largest), a shell's environment
// (absent, null or "local": the client runs it, and t becomes a
// local_shell; "container_auto": at its memory_limit, 1 GB without one;
// any other, such as "container_reference" naming an existing container:
// the largest size). It sets t.Container, or refuses.
func (tr *toolReader) readContainer(t *serverTool) error {
	var j int // the member that says where t runs
	switch {
	case t.Type == hostedShell:
		j = 1
	case kindOf(t.Type) == codeInterpreter:
		j = 0
	default:
		return nil
	}
	if tr.twice[j] {
		return fmt.Errorf("request field %q given twice in a tool, or in another case, which servers read differently (encoding/json merges the two objects, and reads the key in any case): %w", placeFields[j], errAmbiguousRequest)
	}
	v := tr.places[j]
	switch {
	case v == nil || isJSONNull(v):
		if t.Container = 1; j == 1 {
			t.Type, t.Container = "local_shell", 0
		}
		return nil
	case v[0] != '{':
		t.Container = largestContainer
		return nil
	}
	typ, gb, err := readPlace(v)
	switch {
	case err != nil:
		return err
	case j == 0 && (typ == "" || typ == "auto"), j == 1 && typ == "container_auto":
		t.Container = max(gb, 1)
	case j == 1 && typ == "local":
		t.Type = "local_shell"
	default:
		t.Container = largestContainer
	}
	return nil
}

// readPlace reads a container or environment object, v (valid JSON): its
// type (the last string under "type"; "" without one) and the GB of its
// memory_limit (0 without one). A null after a value is passed over, as
// encoding/json does (the dearer reading: other decoders take the default
// size); a key in another case is refused, as servers read it differently;
// so is a memory_limit that is none of containerSizes, which a server
// would refuse or bill at a price not known here.
func readPlace(v []byte) (typ string, gb int64, err error) {
	for key, value := range validMembers(v) {
		i, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, containerFields)
		switch {
		case m == noMatch:
		case m == foldMatch:
			return "", 0, fmt.Errorf("request field %q in a tool's container: a spelling of %q that some servers read and others ignore: %w",
				appendUnquoted(nil, key), containerFields[i], errAmbiguousRequest)
		case isJSONNull(value):
		case i == 0:
			typ, _ = jsonString(value)
		default:
			name, _ := jsonString(value)
			gb = 0
			for _, size := range containerSizes {
				if value[0] == '"' && name == size.name {
					gb = size.gb
				}
			}
			if gb == 0 {
				return "", 0, fmt.Errorf("a tool's container has memory_limit %.40s, which is none of the sizes priced (\"1g\", \"4g\", \"16g\", \"64g\")", value)
			}
		}
	}
	return typ, gb, nil
}

// toolType returns the type a tool's raw "type" value names, lowercased;
// false when it is not a string. A function's, the commonest, written as
// it is, is read without an allocation.
func toolType(value []byte) (string, bool) {
	if string(value) == `"function"` {
		return "function", true
	}
	typ, ok := jsonString(value)
	return strings.ToLower(typ), ok
}

// functionTool reports whether a tool type (lowercased) is a function's,
// whose calls the caller's own code runs.
func functionTool(typ string) bool { return typ == "" || typ == "function" || typ == "custom" }

// freeTool reports whether a tool type (lowercased) costs its tokens only:
// a client tool (see clientTool), or one the provider runs without a fee
// (Anthropic's web_fetch and mcp_toolset, OpenAI's remote mcp, Gemini's
// url_context and code execution). A ToolPrices entry overrides it.
func freeTool(typ string) bool {
	switch typ {
	case "mcp", "mcp_toolset", "url_context", "gemini_code_execution":
		return true
	}
	return clientTool(typ) || toolBase(typ) == "web_fetch"
}

// clientTool reports whether a tool type (lowercased) is one the client
// runs: OpenAI's local_shell (a shell without a hosted environment is read
// as one: see toolReader), apply_patch and namespace (a group of
// functions); Anthropic's bash, text_editor, computer and memory; computer,
// computer_use_preview and computer_use (LiteLLM's, Gemini's computerUse),
// whose actions the client performs. What such a tool returns comes back
// in a later request's body, priced there; what the other tools return
// the provider feeds to the model itself, a hosted shell's too.
func clientTool(typ string) bool {
	switch typ {
	case "local_shell", "apply_patch", "namespace", "computer_use_preview", "computer_use":
		return true
	}
	switch toolBase(typ) {
	case "bash", "text_editor", "computer", "memory":
		return true
	}
	return false
}

// toolBase returns a tool type without its version date: Anthropic's
// web_search_20250305 and OpenAI's web_search_preview_2025_03_11 are
// web_search and web_search_preview.
func toolBase(typ string) string {
	digitsAt := func(s string, i, n int) bool {
		for ; n > 0; i, n = i+1, n-1 {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	if n := len(typ); n > 9 && typ[n-9] == '_' && digitsAt(typ, n-8, 8) {
		return typ[:n-9]
	}
	if n := len(typ); n > 11 && typ[n-11] == '_' && digitsAt(typ, n-10, 4) && typ[n-6] == '_' &&
		digitsAt(typ, n-5, 2) && typ[n-3] == '_' && digitsAt(typ, n-2, 2) {
		return typ[:n-11]
	}
	return typ
}

// toolFee returns the fee of one call of a tool type (lowercased), or of
// its 1 GB container (see serverTool.Container): its ToolPrices entry,
// else that of its base (see toolBase), else that of the base without
// "_preview", else, for a hosted shell, code_interpreter's (the same
// container), else 0 for a free tool; ok is false when none applies.
func toolFee(prices map[string]Money, typ string) (fee Money, ok bool) {
	if fee, ok = prices[typ]; ok {
		return fee, true
	}
	base := toolBase(typ)
	if fee, ok = prices[base]; ok {
		return fee, true
	}
	if fee, ok = prices[strings.TrimSuffix(base, "_preview")]; ok {
		return fee, true
	}
	if typ == hostedShell {
		if fee, ok = prices[codeInterpreterTool]; ok {
			return fee, true
		}
	}
	return 0, freeTool(typ)
}

// kindOf returns the kind of a tool type (lowercased) that answers count,
// or notCounted.
func kindOf(typ string) toolKind {
	base := strings.TrimSuffix(toolBase(typ), "_preview")
	for k, kind := range toolKinds {
		if kind.key == base {
			return toolKind(k)
		}
	}
	return notCounted
}

// toolReserve returns the most the server tools t may cost over choices
// candidates: each tool with a max_uses that many calls at its fee, the
// others together the request's max_tool_calls (else callReserve) calls
// at the dearest of their fees, and no more than max_tool_calls calls at
// the dearest fee of all; and, of those, containers, what a container
// tool's container costs (its fee scaled by its GB, once whatever the
// calls: OpenAI bills a container per session, and makes one for a
// response even when the model calls no tool). A tool free of fees costs
// nothing; one without a fee is an error, so that its calls are not let
// through unpriced.
func toolReserve(prices map[string]Money, t *serverTools, callReserve, choices int64) (reserve, containers Money, err error) {
	var bounded, dearest, dearestUnbounded Money
	unbounded := false
	for _, tool := range t.List {
		fee, ok := toolFee(prices, tool.Type)
		switch {
		case !ok && tool.Container > 0:
			also := ""
			if tool.Type == hostedShell {
				also = ` (nor for "code_interpreter", whose container fee a hosted shell takes when it has none of its own)`
			}
			return 0, 0, fmt.Errorf("tool %q runs on the provider's side in a container, billed per container session by its memory_limit, and ToolPrices has no fee for it%s", tool.Type, also)
		case !ok:
			return 0, 0, fmt.Errorf("tool %q runs on the provider's side and is billed per call, and ToolPrices has no fee for it", tool.Type)
		case tool.Container > 0:
			containers = addSat(containers, mulSat(tool.Container, fee))
			continue
		}
		dearest = max(dearest, fee)
		if tool.MaxUses > 0 {
			bounded = addSat(bounded, mulSat(tool.MaxUses, fee))
		} else {
			unbounded, dearestUnbounded = true, max(dearestUnbounded, fee)
		}
	}
	calls := t.MaxToolCalls
	if calls == 0 {
		calls = callReserve
	}
	reserve = bounded
	if unbounded {
		reserve = addSat(reserve, mulSat(calls, dearestUnbounded))
	}
	if t.MaxToolCalls > 0 {
		reserve = min(reserve, mulSat(t.MaxToolCalls, dearest))
	}
	containers = mulSat(choices, containers)
	return addSat(mulSat(choices, reserve), containers), containers, nil
}

// toolResultTokens returns the input tokens that what the server tools t
// return to the model may add over choices candidates. The provider feeds
// each call's result (search results, a fetched page, an MCP tool's
// answer, code output) to the model as input, and samples the model again
// after it: Anthropic bills a result again at each later sampling of the
// turn, with the prompt and the output before it (context tokens, each
// sampling; the first is the request's own, priced with it). So k calls
// add k samplings' context, and the call whose result is i-th largest is
// billed at most k+1-i times. Each call returns at most web_fetch's
// max_content_tokens (a server ignores it on another tool), else perCall
// tokens; the calls are those toolReserve counts (max_uses, else
// max_tool_calls, else callReserve, and no more than max_tool_calls in
// all), of every tool but the client's (see clientTool). An OpenRouter
// plugin runs before the model, which reads each of its results (its
// uses) once. The sum is saturated at maxUsageTokens, as usage counts are.
func toolResultTokens(t *serverTools, context, perCall, callReserve, choices int64) int64 {
	type calls struct{ n, tokens int64 } // n calls returning tokens each
	var groups []calls
	var unbounded calls
	anyUnbounded := false
	var sum int64
	for _, tool := range t.List {
		if clientTool(tool.Type) {
			continue
		}
		tokens := perCall
		if tool.MaxContentTokens > 0 && toolBase(tool.Type) == "web_fetch" { // no other tool reads it
			tokens = tool.MaxContentTokens
		}
		if strings.HasPrefix(tool.Type, pluginPrefix) {
			uses := tool.MaxUses
			if uses == 0 {
				uses = callReserve
			}
			sum = addTokens(sum, mulTokens(uses, tokens))
			continue
		}
		if tool.MaxUses > 0 {
			groups = append(groups, calls{tool.MaxUses, tokens})
		} else {
			unbounded.tokens, anyUnbounded = max(unbounded.tokens, tokens), true
		}
	}
	if anyUnbounded {
		unbounded.n = callReserve
		if t.MaxToolCalls > 0 {
			unbounded.n = t.MaxToolCalls
		}
		groups = append(groups, unbounded)
	}
	var k int64 // the calls in all
	for _, g := range groups {
		k = addTokens(k, g.n)
	}
	if t.MaxToolCalls > 0 {
		k = min(k, t.MaxToolCalls)
	}
	sum = addTokens(sum, mulTokens(k, context))
	// The largest results first, billed the most times.
	slices.SortFunc(groups, func(a, b calls) int { return cmp.Compare(b.tokens, a.tokens) })
	var before int64 // the calls of larger results
	for _, g := range groups {
		n := min(g.n, k-before)
		if n <= 0 {
			break
		}
		// The calls before+1 ... before+n, billed k-before, ..., k-before-n+1
		// times: at most 1e18 with k at most maxUsageTokens.
		times := n*(k-before) - n*(n-1)/2
		sum = addTokens(sum, mulTokens(times, g.tokens))
		before += n
	}
	return mulTokens(choices, sum)
}

// mulTokens returns a × b, for a, b >= 0, saturated at maxUsageTokens.
func mulTokens(a, b int64) int64 {
	if b != 0 && a > maxUsageTokens/b {
		return maxUsageTokens
	}
	return min(a*b, maxUsageTokens)
}

// addTokens returns a + b, for a, b >= 0, saturated at maxUsageTokens.
func addTokens(a, b int64) int64 {
	return min(min(a, maxUsageTokens)+min(b, maxUsageTokens), maxUsageTokens)
}

// callsBounded reports whether the request bounds the calls of each of
// its tools that has a fee or returns what the model reads as input (see
// toolResultTokens): by max_tool_calls, or by the tool's max_uses.
func (t *serverTools) callsBounded(prices map[string]Money) bool {
	if t.MaxToolCalls > 0 {
		return true
	}
	for _, tool := range t.List {
		if fee, _ := toolFee(prices, tool.Type); (fee > 0 || !clientTool(tool.Type)) && tool.MaxUses == 0 {
			return false
		}
	}
	return true
}

// toolCharge returns what the server tools of an attempt cost, given the
// answer's usage: the containers reserved (see toolReserve) and the calls
// it counts at their fees, or the reservation (or those, if they cost
// more) when the request declared a tool with a fee whose calls the
// answer does not count. Calls the answer counts are charged whether or
// not the request declared their tool, but for those of a container tool
// it declared, whose container is charged instead.
func toolCharge(prices map[string]Money, t *serverTools, u *Usage) Money {
	if t == nil && u.ToolCalls.none() {
		return 0 // the usual chat: no tool declared, no call counted
	}
	var counted Money
	for k := range toolKindCount {
		if n := *u.ToolCalls.of(k); n > 0 && !t.inContainer(k) {
			counted = addSat(counted, mulSat(n, countedFee(prices, t, k)))
		}
	}
	if t == nil {
		return counted
	}
	counted = addSat(counted, t.Containers)
	for _, tool := range t.List {
		if fee, _ := toolFee(prices, tool.Type); fee == 0 || tool.Container > 0 {
			continue
		}
		if k := kindOf(tool.Type); k != notCounted && u.counted&(1<<k) != 0 {
			continue
		}
		return max(t.Reserve, counted)
	}
	return counted
}

// inContainer reports whether t (nil: no tool) declares a container tool
// of kind k, whose calls its container's charge covers.
func (t *serverTools) inContainer(k toolKind) bool {
	if t == nil {
		return false
	}
	for _, tool := range t.List {
		if tool.Container > 0 && kindOf(tool.Type) == k {
			return true
		}
	}
	return false
}

// countedFee returns the fee of a call of kind k that an answer counts:
// the dearest fee of the tools of that kind t declares (a key with a date
// may price one alone), or, when it declares none (a stored prompt
// brought the tool), the dearest fee of any tool of that kind.
func countedFee(prices map[string]Money, t *serverTools, k toolKind) Money {
	var fee Money
	if t != nil {
		declared := false
		for _, tool := range t.List {
			if kindOf(tool.Type) == k {
				f, _ := toolFee(prices, tool.Type)
				fee, declared = max(fee, f), true
			}
		}
		if declared {
			return fee
		}
	}
	fee, _ = toolFee(prices, toolKinds[k].key)
	for typ, f := range prices {
		if kindOf(typ) == k {
			fee = max(fee, f)
		}
	}
	return fee
}

// mulSat returns n × m, for n, m >= 0, saturated above MaxBudgetLimit so
// that sums of such amounts cannot overflow.
func mulSat(n int64, m Money) Money {
	const ceiling = MaxBudgetLimit + 1
	if n <= 0 || m <= 0 {
		return 0
	}
	if n > int64(ceiling/m) {
		return ceiling
	}
	return min(Money(n)*m, ceiling)
}

// addSat returns a + b, for amounts of at least zero, saturated at
// MaxBudgetLimit+1. Either may be above it (a price of tokens saturates at
// maxMoney, see costSum): each is bounded first, so that the sum cannot
// overflow to a negative amount.
func addSat(a, b Money) Money {
	const ceiling = MaxBudgetLimit + 1
	return min(min(a, ceiling)+min(b, ceiling), ceiling)
}
