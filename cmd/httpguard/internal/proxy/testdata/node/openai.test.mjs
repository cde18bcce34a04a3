// The official Node openai client pointed at httpguard proxy by its base URL
// only. TestNodeOpenAIClient (node_test.go) starts the fault server and the
// proxy and runs this file with node (one process, not `node --test`, whose
// runner would run it in a child process); PROXY_URL and the virtual keys
// come from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.PROXY_URL + '/v1';
const messages = [{ role: 'user', content: 'Say ok.' }];
const model = 'deepseek-v3.2';

test('a completion comes back through the proxy, which retried the faults itself', async () => {
  // The Go side scripted a 503 and a reset ahead of this request; the SDK
  // makes no retry of its own.
  const client = new OpenAI({ apiKey: process.env.CHAT_KEY, baseURL, maxRetries: 0 });
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.choices[0].message.content, /^ok( ok)*$/);
  assert.ok(r.usage.prompt_tokens > 0);
});

test('a stream arrives chunk by chunk, without the usage chunk the proxy asked for', async () => {
  const client = new OpenAI({ apiKey: process.env.CHAT_KEY, baseURL });
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, stream: true });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.ok(chunk.choices.length > 0, 'every chunk has a choice: the usage-only chunk is stripped');
    text += chunk.choices[0].delta.content ?? '';
  }
  assert.equal(text, 'ok ok ok ok ok ok ok ok');
  assert.ok(chunks >= 10);
});

test('a stream that asks for usage gets it', async () => {
  const client = new OpenAI({ apiKey: process.env.CHAT_KEY, baseURL });
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 8, stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(usage.completion_tokens, 8);
});

test('a spent budget is a 429 insufficient_quota the SDK does not retry', async () => {
  const client = new OpenAI({ apiKey: process.env.TINY_KEY, baseURL, maxRetries: 2 });
  await assert.rejects(client.chat.completions.create({ model, messages, max_tokens: 8 }), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, err.constructor.name);
    assert.equal(err.status, 429);
    assert.equal(err.type, 'insufficient_quota');
    assert.equal(err.code, 'budget_exceeded:tiny');
    assert.equal(err.headers.get('x-should-retry'), 'false');
    return true;
  });
});

test('an unknown key is a 401', async () => {
  const client = new OpenAI({ apiKey: 'sk-not-a-virtual-key', baseURL, maxRetries: 0 });
  await assert.rejects(client.chat.completions.create({ model, messages }), OpenAI.AuthenticationError);
});

test('a model the key may not use is a 403', async () => {
  const client = new OpenAI({ apiKey: process.env.CHAT_KEY, baseURL, maxRetries: 0 });
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4.1', messages }), (err) => {
    assert.ok(err instanceof OpenAI.PermissionDeniedError, err.constructor.name);
    assert.equal(err.code, 'model_not_allowed');
    return true;
  });
});
