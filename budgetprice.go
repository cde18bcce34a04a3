package httpguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
)

// This file prices a request for the Budget: its worst-case cost from
// the body (model, max_tokens, n, tools, images) and the price table,
// which an attempt reserves before it is sent (see budgetattempt.go).

// quote is a priced attempt, ready to be reserved.
type quote struct {
	r          *http.Request   // the request to send: req, or a copy replaying its body
	kept       *keptBody       // when not nil, r's body, read whole from r.Body, to send (see keptBody)
	streamBody *bodyEdit       // when not nil, the edit that adds include_usage to the body sent
	chat       chatRequest     // what the body says, for the layers below
	at         streamOptionsAt // where include_usage goes in the body
	price      *Price          // the Budget's copy of the table's (Budget.pointers): not to be changed
	fallback   bool            // the table's FallbackModel entry gave price
	model      modelHash       // chat.Model's hash, or 0 when another listed name hashes alike (see foundPrice)
	// dearer, when set, is the model other than the body's whose own
	// entry gave price: a fallback model the request names, an Azure
	// deployment.
	dearer  string
	output  int64 // output tokens reserved per choice
	fromMax bool  // output came from the request's max_tokens
	// fromImages: output came from an Images API request's model, quality
	// and size (see imageOutputTokens).
	fromImages bool
	reserve    Money
	id         uint64     // the reservation's ID
	free       bool       // a moderation OpenAI serves free: q.r passes unpriced
	absent     headerKeys // the Budget's header keys the request certainly does not hold (see absentKeys)
}

// price reads req, whose path says path, and its body, and prices it
// into q, a zero quote (written in place: a quote is long to copy). It
// does not close req.Body, unless it reads it whole into q.kept; on
// success q.r is req or, for a body without GetBody, a copy that replays
// it, and q.kept, when set, is req's body to send.
// A moderation request (to a path ending in /moderations) for a model
// OpenAI serves free is not priced: q.free.
func (b *Budget) price(q *quote, req *http.Request, moderation bool, path *pathFacts) error {
	if req.GetBody == nil {
		r, body, err := replayableCtx(req, b.cfg.MaxBufferedBody)
		q.r = r
		return b.priceBody(q, req, body, err, moderation, path)
	}
	if req.ContentLength > 0 && req.ContentLength <= min(maxPooledBody, b.cfg.MaxBufferedBody) && freshGetBody(req.GetBody) {
		// A body http.NewRequest made replayable: its own Body is read
		// into q.kept, which the attempt sends (see keptBody), rather than
		// a GetBody copy thrown away once priced.
		k := getKeptBody()
		body, err := k.read(req, b.cfg.MaxBufferedBody)
		q.r, q.kept = req, k
		err = b.priceBody(q, req, body, err, moderation, path)
		if err != nil || q.free {
			err = q.unkeep(req, err)
		}
		return err
	}
	// The buffer goes back once the body is priced; not with a defer,
	// which priceBody's many returns would make cost a call of its own.
	buf := getBodyBuffer()
	body, err := readGetBody(req, b.cfg.MaxBufferedBody, *buf)
	q.r = req
	err = b.priceBody(q, req, body, err, moderation, path)
	putBodyBuffer(buf, body)
	return err
}

// unkeep gives q.kept back, for a request priced with err that sends no
// attempt: refused, or sent on unpriced (q.free), from req, with a copy
// of the bytes read and no GetBody. Not req's GetBody: req.Body was read,
// and a Retrier's resendGate above (with a Breaker between) fails its
// GetBody from then on, as if net/http were sending the request again; so
// would a Limiter below, reading a copy.
func (q *quote) unkeep(req *http.Request, err error) error {
	if err == nil && q.free {
		r := *req
		r.Body, r.GetBody = io.NopCloser(bytes.NewReader(bytes.Clone(q.kept.b))), nil
		q.r = &r
	}
	q.dropKept()
	return err
}

// dropKept gives q.kept back, for a request that will not send it.
func (q *quote) dropKept() {
	if q.kept != nil {
		q.kept.Close()
		q.kept = nil
	}
}

// priceBody is price into q, whose r is the request to send (req, or its
// replayable copy), given what reading req's body gave: body and err.
func (b *Budget) priceBody(q *quote, req *http.Request, body []byte, err error, moderation bool, path *pathFacts) error {
	if err != nil {
		if q.r != req {
			closeRequestBody(q.r) // what is left of an over-long body
		}
		if errors.Is(err, errBodyTooLarge) && moderation && req.GetBody != nil {
			// An image sent inline makes a moderation long: its model
			// alone says whether it is free.
			if model, ok := moderationModel(req); ok && freeModeration(model) {
				q.free = true
				return nil
			}
		}
		if errors.Is(err, errBodyTooLarge) {
			return fmt.Errorf("httpguard: budget: request body over MaxBufferedBody (%d bytes) cannot be priced: raise BudgetConfig.MaxBufferedBody, or exempt such requests with BudgetConfig.Exempt: %w", b.cfg.MaxBufferedBody, ErrUnknownModel)
		}
		return fmt.Errorf("httpguard: budget: reading the request body: %w", err)
	}
	cr := &q.chat // parsed in place: a chatRequest is long to copy
	var fallbacks []fallbackModel
	var images imageRequest
	if path.images {
		fallbacks, images, err = parseImagesRequest(req, body, cr, &q.at)
	} else {
		fallbacks, err = parseChatRequestFallbacks(body, cr, &q.at)
	}
	deployment := path.deployment
	if cr.Model == "" {
		cr.Model = deployment // the model that runs it
	}
	switch {
	case err != nil && errors.Is(err, errAmbiguousRequest): // not a call for most bodies
		return fmt.Errorf("httpguard: budget: %s (servers would read this body differently; spell the field as the API documents): %w", trimPrefix(err), ErrUnknownModel)
	case err != nil && errors.Is(err, errJSONSyntax):
		// Most often an upload (multipart/form-data: audio, files): say what
		// the body is, by its media type (the boundary after it is noise).
		mt, _, _ := strings.Cut(req.Header.Get("Content-Type"), ";")
		return fmt.Errorf("httpguard: budget: request body (Content-Type %q) cannot be priced (%v); exempt such requests with BudgetConfig.Exempt: %w", strings.TrimSpace(mt), trimPrefix(err), ErrUnknownModel)
	case err != nil:
		return fmt.Errorf("httpguard: budget: request body cannot be priced (%v); exempt such requests with BudgetConfig.Exempt: %w", trimPrefix(err), ErrUnknownModel)
	case moderation && freeModeration(cr.Model):
		q.free = true
		return nil
	case cr.Model == "":
		return fmt.Errorf("httpguard: budget: request body names no model; exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case cr.Job == reqPromptID || cr.Job == reqUserConfig:
		return fmt.Errorf("httpguard: budget: request names a %s, on which a relay (LiteLLM) runs a model, max_tokens or messages it holds in place of the body's, so it cannot be priced: send them in the body, or exempt such requests with BudgetConfig.Exempt: %w", requestFieldNames[cr.Job], ErrUnknownModel)
	case q.absent&keyPortkeyConfig == 0 && portkeyOverrides(req.Header):
		return fmt.Errorf("httpguard: budget: request carries an x-portkey-config that may run it otherwise than its body says (override_params or an Azure deployment_id, in the config or a target, or a config's id, held on Portkey's side), so it cannot be priced: send the model and max_tokens in the body, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case q.absent&keyPortkeyProvider == 0 && portkeyDeployment(req.Header):
		return fmt.Errorf("httpguard: budget: request names an Azure deployment in x-portkey-azure-deployment-id, on which Portkey's gateway runs it whatever model its body names, so it cannot be priced: send it to Azure at the deployment's path (/openai/deployments/{name}/...), which the Budget prices, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case q.absent&keyHeliconeFallbacks == 0 && heliconeOverrides(req.Header):
		return fmt.Errorf("httpguard: budget: request carries a helicone-fallbacks header that may run it otherwise than its body says (a fallback's bodyKeyOverride, which Helicone merges into the body: a model, max_tokens, n), so it cannot be priced: send the model and max_tokens in the body, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case cr.Job != reqModel:
		return fmt.Errorf("httpguard: budget: request starts a job (%s: an Assistants run, a fine-tuning job or a batch) that the provider answers without usage and bills by what the body does not hold, so it cannot be priced; exempt such requests with BudgetConfig.Exempt: %w", requestFieldNames[cr.Job], ErrUnknownModel)
	case path.spanned != "":
		return fmt.Errorf("httpguard: budget: the path names the model that runs the request as %q, which LiteLLM, or a server that routes the path leniently, reads as %q: name the model in one segment, or send the request to an endpoint without one: %w", deployment, path.spanned, ErrUnknownModel)
	case path.videos:
		return fmt.Errorf("httpguard: budget: request starts a video job (%s), which the provider answers queued, without usage, and bills by the second, so it cannot be priced; exempt such requests with BudgetConfig.Exempt: %w", errorPath(req.URL), ErrUnknownModel)
	case cr.Background && cr.MaxOutput <= 0:
		return fmt.Errorf("httpguard: budget: request runs in the background (\"background\": true): it is answered queued, without usage, and charged its reservation alone, which bounds its output only with max_output_tokens: set max_output_tokens: %w", ErrUnknownModel)
	case cr.StoredInput && b.cfg.StoredInputReserve == 0:
		return fmt.Errorf("httpguard: budget: request continues input the provider stored (previous_response_id, conversation, a stored prompt, an input item_reference, a reasoning item by its id alone, a Gemini context cache, cached_content, or an Anthropic message thread, thread), which it bills as input but the body does not hold: send that input in the body, or set BudgetConfig.StoredInputReserve to the tokens such input may hold: %w", ErrUnknownModel)
	case cr.StoredInput:
		cr.PromptTokens += min(b.cfg.StoredInputReserve, maxUsageTokens) // as usage counts are bounded
	}
	// Speech answers with audio alone: its output is audio, and the
	// reservation is its charge.
	if path.speech {
		cr.Outputs |= audioOutput
	}
	// So does the Images API with images: its output is priced as image
	// output, and reserved so.
	if path.images {
		cr.Outputs |= imageOutput | imagesAlone
	}
	if cr.Tier == tierStandard && q.absent&keyVertexPriority == 0 && vertexPriority(req.Header) {
		cr.Tier = tierPriority
	}
	var miss foundPrice
	found := b.prices.lookup(b.pointers, b.served, cr.Model, cr.Tier, &miss)
	switch {
	case !found.ok && cr.Tier != tierStandard:
		what := cr.tierWhat()
		if cr.Tier == tierPriority && vertexPriority(req.Header) {
			what = vertexPriorityHeader + ": priority"
		}
		return fmt.Errorf("httpguard: budget: model %q asks for %v, billed above standard prices, and has no price for it: add a %q entry to the price table (%q prices every unlisted model's): %w",
			cr.Model, what, cr.Model+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
	case !found.ok:
		return fmt.Errorf("httpguard: budget: model %q has no price: add it to the price table, or a %q entry to price every unlisted model: %w", cr.Model, FallbackModel, ErrUnknownModel)
	case listsModels(found, cr.Model):
		return fmt.Errorf("httpguard: budget: model %q names several models, which LiteLLM runs each, billed each, for one request (a batch): name one model, or add a %q entry to the price table that prices them all: %w", cr.Model, cr.Model, ErrUnknownModel)
	}
	q.price, q.fallback, q.model = found.price, found.fallback, found.model
	if cr.MaxOutput <= 0 && namesClaude(deployment) {
		// LiteLLM runs the engine the path names, Claude, with the thinking
		// budget of a reasoning_effort, whatever model the body names.
		cr.MaxOutput = -max(-cr.MaxOutput, claudeEffortMaxTokens(body))
	}
	q.fromMax = cr.MaxOutput > 0
	if path.images {
		// The Images API takes no max_tokens: an image's output is bounded
		// by its model, quality and size, for each model that may run it.
		cr.MaxOutput = b.imagesOutput(images, cr, deployment, fallbacks)
		q.fromMax, q.fromImages = false, true
	}
	var outputs int64
	q.output, outputs = b.outputBound(cr)
	if cr.Tools != nil { // before tokenReserve, which prices these tokens as input
		cr.Tools.ResultTokens = toolResultTokens(cr.Tools, addTokens(cr.PromptTokens, q.output), b.cfg.ToolResultReserve, b.cfg.ToolCallReserve, cr.Choices)
	}
	q.reserve = tokenReserve(found.price, cr, outputs)
	// A relay may serve the request with a fallback model instead, billed
	// at its own price: the request is priced at the dearest. Anthropic's
	// server-side fallbacks bill every model they try, the ones that
	// refused too: a request to any path that may be its Messages API
	// reserves them all (see oneModelServes).
	// An entry of Anthropic's may set its own max_tokens: its output is
	// reserved at them.
	every := q.reserve
	for _, f := range fallbacks {
		if f.fast && !strings.HasPrefix(string(cr.Tier), string(tierFast)) {
			// Its model is billed at fast prices, which the request's
			// tier settles no model at.
			return fmt.Errorf("httpguard: budget: the fallback to %q sets a \"speed\" other than \"standard\" (fast mode), billed at that model's fast prices, but the request runs at standard speed, whose prices settle every model it names: set \"speed\": \"fast\" on the request too (with %q prices), or leave the fallback's speed out: %w",
				f.name, f.name+FastTier, ErrUnknownModel)
		}
		m, hop, hopOutputs := f.name, f.at(cr), outputs
		if hop != cr {
			var perChoice int64
			perChoice, hopOutputs = b.outputBound(hop)
			q.output = max(q.output, perChoice)
		}
		r, ok := b.priceAtDearer(q, hop, hopOutputs, m)
		every = addSat(every, r)
		if !ok {
			return fmt.Errorf("httpguard: budget: model %q, which the request names (in models or fallbacks) to serve it if %q cannot, has no price: add a %q entry to the price table (%q prices every unlisted model's): %w",
				m, cr.Model, m+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
		}
	}
	tried := 1 // the models billed for the request, at most
	if len(fallbacks) > 0 && !oneModelServes(req.URL) {
		q.reserve = min(every, MaxBudgetLimit+1)
		tried += len(fallbacks)
	}
	// Azure runs the request on its deployment, LiteLLM on the engine the
	// path names, whatever the body names.
	priced := true
	if deployment != "" && deployment != cr.Model {
		_, priced = b.priceAtDearer(q, cr, outputs, deployment)
	}
	if !priced {
		what := "the deployment or engine %q the path names"
		if path.queried {
			what = "the model %q the query string names (LiteLLM's ?model=)"
		}
		return fmt.Errorf("httpguard: budget: "+what+", which runs the request whatever model its body names (%q), has no price: add a %q entry to the price table (%q prices every unlisted model's): %w",
			deployment, cr.Model, deployment+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
	}
	if lc := q.price.LongContext; lc == nil || lc.Above > anthropicContext {
		input := cr.PromptTokens // as tokenReserve bounds the input: with what server tools return
		if cr.Tools != nil {
			input += cr.Tools.ResultTokens
		}
		// Most prompts are far below: the header is then not read.
		if input > anthropicContext {
			if beta := longContextBeta(req.Header); beta != "" {
				fix := fmt.Sprintf(`add "long_context" to its entry ({"above": %d, "input": …, "output": …})`, anthropicContext)
				if lc != nil {
					fix = fmt.Sprintf(`lower its "long_context" "above" to %d`, anthropicContext)
				}
				return fmt.Errorf("httpguard: budget: the request asks for Anthropic's long context (anthropic-beta: %s), billed at long-context prices past %d input tokens, which its input may pass, and the price of model %q has none from there: %s: %w",
					beta, anthropicContext, cr.Model, fix, ErrUnknownModel)
			}
		}
	}
	if cr.Tools != nil {
		if cr.Tools.Reserve, cr.Tools.Containers, err = toolReserve(b.cfg.ToolPrices, cr.Tools, b.cfg.ToolCallReserve, cr.Choices); err != nil {
			return fmt.Errorf("httpguard: budget: %v: add its fee per call (or per 1 GB container) to BudgetConfig.ToolPrices (0 if it has none); exempt such requests with BudgetConfig.Exempt: %w: %w", err, ErrUnpricedTool, ErrUnknownModel)
		}
		if cr.Background && !cr.Tools.callsBounded(b.cfg.ToolPrices) {
			return fmt.Errorf("httpguard: budget: request runs in the background (\"background\": true) with server tools, billed per call or for what they return to the model: it is answered queued, without the calls it makes, and charged its reservation alone, which bounds them only with max_tool_calls: set max_tool_calls: %w", ErrUnknownModel)
		}
		// Each model tried may call the tools, up to their bounds.
		q.reserve = addSat(q.reserve, mulSat(int64(tried), cr.Tools.Reserve))
	}
	if cr.Stream && !cr.IncludeUsage && !b.cfg.DisableStreamUsage && acceptsStreamOptions(req) {
		if e, changed := withStreamUsage(body, cr, &q.at); changed {
			q.streamBody = &e // holds no reference to body, which may go back to bodyBuffers
		}
	}
	if b.ownStore() == nil {
		// The Budget's own store without a lease names no reservation
		// (see reserveUnleased): an ID, a write every core shares, only
		// for the stores that keep one.
		q.id = b.ids.v.Add(1)
	}
	return nil
}

// entryIndex returns one plus the index of entry in b.entries, or 0 when
// it is not there or past what budgetAttempt.dearer holds.
func (b *Budget) entryIndex(entry string) uint16 {
	i, ok := slices.BinarySearch(b.entries, entry)
	if !ok || i >= math.MaxUint16 {
		return 0
	}
	return uint16(i + 1)
}

// priceAtDearer prices q at model's price when it reserves more for cr,
// with outputs output tokens, and returns what model's price reserves;
// false when model has no price.
func (b *Budget) priceAtDearer(q *quote, cr *chatRequest, outputs int64, model string) (Money, bool) {
	var miss foundPrice
	f := b.prices.lookup(b.pointers, b.served, model, cr.Tier, &miss)
	if !f.ok || listsModels(f, model) {
		return 0, false
	}
	r := tokenReserve(f.price, cr, outputs)
	if r > q.reserve {
		q.price, q.fallback, q.reserve, q.dearer = f.price, f.fallback, r, ""
		if !f.fallback {
			q.dearer = model
		}
	}
	return r, true
}

// listsModels reports whether model, found as f, is a list of models
// ("a,b") that only FallbackModel prices: LiteLLM runs each model of such
// a list (route_request's batch), and one entry's price is one run's.
func listsModels(f *foundPrice, model string) bool {
	return f.fallback && strings.IndexByte(model, ',') >= 0
}

// outputBound returns the output tokens reserved for a request: for each
// choice (its max_tokens, else OutputReserve, or a thinking budget plus
// liteLLMDefaultMaxTokens when that is more), and for all its choices,
// saturated (OutputReserve is unbounded).
func (b *Budget) outputBound(cr *chatRequest) (perChoice, all int64) {
	perChoice = cr.MaxOutput
	if perChoice <= 0 {
		// Or, for a request that enables thinking, the max_tokens
		// LiteLLM runs it with, when that is more.
		perChoice = max(b.cfg.OutputReserve, -perChoice)
	}
	all = math.MaxInt64
	if perChoice <= math.MaxInt64/cr.Choices {
		all = perChoice * cr.Choices
	}
	return perChoice, all
}

// imagesOutput is the bound on each image's output tokens of cr, a
// request to the Images API whose body asks for r: the dearest for the models
// that may run it (the body's, the deployment the path names, its
// fallbacks).
func (b *Budget) imagesOutput(r imageRequest, cr *chatRequest, deployment string, fallbacks []fallbackModel) int64 {
	n := imageOutputTokens(cr.Model, r, b.cfg.OutputReserve, b.cfg.ImageReserve)
	if deployment != "" {
		n = max(n, imageOutputTokens(deployment, r, b.cfg.OutputReserve, b.cfg.ImageReserve))
	}
	for _, f := range fallbacks {
		n = max(n, imageOutputTokens(f.name, r, b.cfg.OutputReserve, b.cfg.ImageReserve))
	}
	return n
}

// parseImagesRequest is parseChatRequestFallbacks for req, a request to
// the Images API whose body is body, with what it asks of its images: an
// edit or a variation the SDKs send as multipart/form-data is read as a
// form (see parseImageForm).
func parseImagesRequest(req *http.Request, body []byte, cr *chatRequest, at *streamOptionsAt) ([]fallbackModel, imageRequest, error) {
	if form, boundary := formOf(req.Header); form == multipartForm {
		images, err := parseImageForm(body, boundary, cr)
		return nil, images, err
	}
	fallbacks, err := parseChatRequestFallbacks(body, cr, at)
	if err != nil {
		return nil, imageRequest{}, err
	}
	images := readImageRequest(body)
	cr.Choices = max(cr.Choices, min(images.choices, maxUsageTokens))
	return fallbacks, images, nil
}

// moderationModel reads the model a moderation body names from a fresh
// copy of it (req.GetBody), a read at a time, for a body too long to
// buffer. ok is false when the body is not a JSON object, or names its
// model in a way servers would read differently (a key in another case, a
// null after a value, a value not a string).
func moderationModel(req *http.Request) (model string, ok bool) {
	rc, err := callGetBody(req.GetBody)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	r := modelReader{lex: jsonLexer{objectOnly: true}}
	p := make([]byte, 32<<10) // a rare path: bodies over MaxBufferedBody
	for {
		n, err := rc.Read(p)
		readText(&r.lex, &r.capture, p[:n], &r)
		if err == io.EOF {
			break
		}
		if err != nil || r.bad || r.lex.state == lexError {
			return "", false
		}
	}
	return r.model, !r.bad && r.lex.end()
}

// modelReader reads the top-level "model" members of a JSON object as
// they pass: the last string one is the model. A key in another case, a
// null after a string, or a value not a string or null is bad.
type modelReader struct {
	lex     jsonLexer
	capture valueCapture
	model   string
	named   bool
	bad     bool
}

// maxModelValue bounds a model name's JSON string.
const maxModelValue = 1 << 10

var modelKey = []string{"model"}

func (r *modelReader) readKey() {
	raw, escaped := r.lex.key()
	switch _, m := lookupName(raw, escaped, modelKey); m {
	case exactMatch:
		r.capture.start(maxModelValue)
	case foldMatch:
		r.bad = true
	}
}

func (r *modelReader) readMember(p []byte) {
	if !r.capture.on {
		return
	}
	v, whole := r.capture.end(p, &r.lex)
	switch s, isString := jsonString(v); {
	case !whole:
		r.bad = true
	case isString:
		r.model, r.named = s, true
	case !isJSONNull(v) || r.named:
		r.bad = true
	}
}

func (r *modelReader) readString()      {}
func (r *modelReader) readValue([]byte) {}

// trimPrefix drops the package prefix of an inner error, so that a message
// carries it once.
func trimPrefix(err error) string {
	return strings.TrimPrefix(err.Error(), "httpguard: ")
}

// tokenReserve is what request cr reserves at price p for its prompt, with
// what its server tools return to the model, and outputs tokens of output
// (fees per request included, server tools' fees not). A reserve above
// MaxBudgetLimit fits no Limit: kept just above it, so that no store
// adding it to what it holds can overflow.
func tokenReserve(p *Price, cr *chatRequest, outputs int64) Money {
	input := cr.PromptTokens
	if cr.Tools != nil {
		input += cr.Tools.ResultTokens // both far below 2^62
	}
	if cr.Outputs&imagesAlone != 0 {
		return imagesTokenReserve(p, cr, input, outputs)
	}
	return min(p.reserve(input, outputs, cr.Outputs, cr.Choices), MaxBudgetLimit+1)
}

// imagesTokenReserve is tokenReserve for a request to the Images API, of
// input prompt tokens: its prompt is priced at the dearer of the input
// and image input prices, for it holds an edit's images, billed as image
// input tokens.
func imagesTokenReserve(p *Price, cr *chatRequest, input, outputs int64) Money {
	at := *p
	at.Input = max(at.Input, at.ImageInput)
	if lc := at.LongContext; lc != nil {
		long := *lc
		long.Input = max(long.Input, long.ImageInput)
		at.LongContext = &long
	}
	return min(at.reserve(input, outputs, cr.Outputs, cr.Choices), MaxBudgetLimit+1)
}
