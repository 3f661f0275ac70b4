// The official Node SDKs (openai, @anthropic-ai/sdk, @google/genai) against a running gateway:
// the Node twin of ../check_sdks.py, with the same checks as far as the Node SDKs allow.
//
// Each client is built exactly as a user would build it against the real provider, with only
// its base URL and API key changed (SPEC section 3). Reads from the environment:
//
// - GATEWAY_URL: the proxy listener, e.g. http://127.0.0.1:8080
// - GATEWAY_KEY: an active proxy key
// - REVOKED_KEY: a revoked proxy key
//
// The gateway is expected to forward to the e2e mock provider (tests/src/mock.rs), so the
// expected contents ("Hello from the mock.", "part0 " ...) and token counts (11 in, 7 out) are
// the mock's. Prints one line per check and exits 1 at the first failure, with the reason.
//
// Arguments name the SDKs to check (`openai`, `anthropic`, `gemini`); none means all three.
// `configured-openai`, `configured-anthropic` and `azure` check the configured providers of
// tests/e2e/providers.rs (SPEC section 10) instead; they are run only by name.
// The SDKs are found from where this file is, so it runs from inside the tree setup.sh prints
// (tests/e2e/sdk.rs copies it there); by hand:
//   tree="$(tests/sdk/node/setup.sh | tail -n1)"
//   cp tests/sdk/node/check_sdks.mjs "$tree/" && node "$tree/check_sdks.mjs" openai

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { inspect } from 'node:util';

import Anthropic from '@anthropic-ai/sdk';
import { ApiError, GoogleGenAI } from '@google/genai';
import OpenAI, { AzureOpenAI } from 'openai';

const GATEWAY_URL = process.env.GATEWAY_URL.replace(/\/+$/, '');
const KEY = process.env.GATEWAY_KEY;
const REVOKED_KEY = process.env.REVOKED_KEY;

const OPENAI_MODEL = 'gpt-4o-mini';
const ANTHROPIC_MODEL = 'claude-sonnet-4-6';
const GEMINI_MODEL = 'gemini-2.0-flash';
const UPLOAD_TEXT = 'twelve bytes';
const MOCK_REPLY = 'Hello from the mock.';
const PROMPT_TOKENS = 11;
const COMPLETION_TOKENS = 7;
const STREAM_PARTS = ['part0 ', 'part1 ', 'part2 '];
const AZURE_DEPLOYMENT = 'prod-mini';
const AZURE_API_VERSION = '2024-10-21';

class CheckFailed extends Error {}

function expect(condition, message) {
  if (!condition) {
    throw new CheckFailed(message);
  }
}

const show = (value) => inspect(value, { depth: 6, breakLength: Infinity });
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** Runs one check; prints `ok name: detail` or the failure, and exits at the first one. */
async function check(name, fn) {
  let detail;
  try {
    detail = await fn();
  } catch (error) {
    if (error instanceof CheckFailed) {
      console.log(`FAIL ${name}: ${error.message}`);
    } else {
      // Any SDK error is a failed check.
      console.log(`FAIL ${name}: ${error?.constructor?.name}: ${error?.message ?? error}`);
      const body = error?.error ?? error?.body;
      if (body !== undefined) {
        console.log(`     response body: ${show(body)}`);
      }
      if (error?.cause !== undefined) {
        console.log(`     cause: ${error.cause?.message ?? show(error.cause)}`);
      }
      console.log(error?.stack ?? '');
    }
    process.exit(1);
  }
  console.log(`ok   ${name}: ${detail}`);
}

/** The gateway's 403 `key_revoked` as the SDK's parsed error. */
function expectRevoked(error, status, codeAndBody) {
  expect(status === 403, `status ${status}, expected 403; ${show(error)}`);
  expect(
    codeAndBody.some((x) => show(x).includes('key_revoked')),
    `\`key_revoked\` in neither the code nor the body: ${show(codeAndBody)}`,
  );
}

/** Runs `request`, which must be refused: returns the error it threw. */
async function refusal(request) {
  try {
    await request();
  } catch (error) {
    return error;
  }
  throw new CheckFailed('a revoked key was not refused');
}

// --- openai ------------------------------------------------------------------------------

async function openaiChecks(route) {
  const client = new OpenAI({ baseURL: `${GATEWAY_URL}${route}`, apiKey: KEY });
  const messages = [{ role: 'user', content: 'Say hello.' }];

  await check(`openai ${route} chat.completions.create`, async () => {
    const completion = await client.chat.completions.create({ model: OPENAI_MODEL, messages });
    const content = completion.choices[0].message.content;
    expect(content === MOCK_REPLY, `content ${show(content)}, expected ${show(MOCK_REPLY)}`);
    expect(completion.usage != null, 'no usage');
    const usage = [completion.usage.prompt_tokens, completion.usage.completion_tokens];
    expect(same(usage, [PROMPT_TOKENS, COMPLETION_TOKENS]), `usage ${show(usage)}`);
    return show(content);
  });

  await check(`openai ${route} chat.completions.create({stream: true})`, async () => {
    const pieces = [];
    let finish = null;
    let chunks = 0;
    const stream = await client.chat.completions.create({
      model: OPENAI_MODEL,
      messages,
      stream: true,
    });
    for await (const chunk of stream) {
      chunks += 1;
      expect(chunk.usage == null, `a usage chunk the client did not ask for: ${show(chunk)}`);
      for (const choice of chunk.choices) {
        if (choice.delta.content) {
          pieces.push(choice.delta.content);
        }
        finish = choice.finish_reason || finish;
      }
    }
    expect(same(pieces, STREAM_PARTS), `deltas ${show(pieces)}, expected ${show(STREAM_PARTS)}`);
    expect(finish === 'stop', `finish_reason ${show(finish)}`);
    return `${chunks} chunks, deltas ${show(pieces.join(''))}, finish ${show(finish)}`;
  });

  await check(`openai ${route} stream with include_usage`, async () => {
    const pieces = [];
    let usage = null;
    const stream = await client.chat.completions.create({
      model: OPENAI_MODEL,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        if (choice.delta.content) {
          pieces.push(choice.delta.content);
        }
      }
      if (chunk.usage != null) {
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens];
      }
    }
    expect(same(pieces, STREAM_PARTS), `deltas ${show(pieces)}`);
    expect(same(usage, [PROMPT_TOKENS, COMPLETION_TOKENS]), `usage ${show(usage)}`);
    return `usage ${show(usage)}`;
  });

  await check(`openai ${route} models.list`, async () => {
    const ids = [];
    for await (const model of client.models.list()) {
      ids.push(model.id);
    }
    expect(ids.includes('gpt-4o') && ids.includes('gpt-4o-mini'), `models ${show(ids)}`);
    return ids.join(', ');
  });

  await check(`openai ${route} revoked key`, async () => {
    const revokedClient = new OpenAI({ baseURL: `${GATEWAY_URL}${route}`, apiKey: REVOKED_KEY });
    const error = await refusal(() =>
      revokedClient.chat.completions.create({ model: OPENAI_MODEL, messages }),
    );
    if (!(error instanceof OpenAI.PermissionDeniedError)) {
      throw error;
    }
    expectRevoked(error, error.status, [error.code, error.error]);
    return `PermissionDeniedError ${error.status} code=${show(error.code)}`;
  });
}

// --- anthropic ---------------------------------------------------------------------------

async function anthropicChecks(route = '/anthropic') {
  const client = new Anthropic({ baseURL: `${GATEWAY_URL}${route}`, apiKey: KEY });
  const messages = [{ role: 'user', content: 'Say hello.' }];
  const textOf = (message) =>
    message.content
      .filter((block) => block.type === 'text')
      .map((block) => block.text)
      .join('');

  await check(`anthropic ${route} messages.create`, async () => {
    const message = await client.messages.create({
      model: ANTHROPIC_MODEL,
      max_tokens: 64,
      messages,
    });
    const text = textOf(message);
    expect(text === MOCK_REPLY, `text ${show(text)}, expected ${show(MOCK_REPLY)}`);
    const usage = [message.usage.input_tokens, message.usage.output_tokens];
    expect(same(usage, [PROMPT_TOKENS, COMPLETION_TOKENS]), `usage ${show(usage)}`);
    return show(text);
  });

  await check(`anthropic ${route} messages.stream`, async () => {
    const pieces = [];
    const stream = client.messages.stream({ model: ANTHROPIC_MODEL, max_tokens: 64, messages });
    stream.on('text', (delta) => pieces.push(delta));
    const final = await stream.finalMessage();
    expect(
      same(pieces, STREAM_PARTS),
      `text deltas ${show(pieces)}, expected ${show(STREAM_PARTS)}`,
    );
    const text = textOf(final);
    expect(text === STREAM_PARTS.join(''), `final text ${show(text)}`);
    expect(final.stop_reason === 'end_turn', `stop_reason ${show(final.stop_reason)}`);
    expect(
      final.usage.output_tokens === COMPLETION_TOKENS,
      `output tokens ${final.usage.output_tokens}, expected ${COMPLETION_TOKENS}`,
    );
    expect(
      final.usage.input_tokens === PROMPT_TOKENS,
      `input tokens ${final.usage.input_tokens}, expected ${PROMPT_TOKENS}`,
    );
    return `${show(text)}, usage in ${final.usage.input_tokens} out ${final.usage.output_tokens}`;
  });

  await check(`anthropic ${route} models.list`, async () => {
    const ids = [];
    for await (const model of client.models.list()) {
      ids.push(model.id);
    }
    expect(ids.length > 0, 'no models');
    return ids.join(', ');
  });

  await check(`anthropic ${route} revoked key`, async () => {
    const revokedClient = new Anthropic({
      baseURL: `${GATEWAY_URL}${route}`,
      apiKey: REVOKED_KEY,
    });
    const error = await refusal(() =>
      revokedClient.messages.create({ model: ANTHROPIC_MODEL, max_tokens: 8, messages }),
    );
    if (!(error instanceof Anthropic.PermissionDeniedError)) {
      throw error;
    }
    expectRevoked(error, error.status, [error.error]);
    return `PermissionDeniedError ${error.status}`;
  });
}

// --- Azure OpenAI (SPEC section 10) --------------------------------------------------------

async function azureChecks() {
  const clientWith = (apiKey) =>
    new AzureOpenAI({
      endpoint: `${GATEWAY_URL}/azure`,
      apiKey,
      apiVersion: AZURE_API_VERSION,
    });
  const client = clientWith(KEY);
  const messages = [{ role: 'user', content: 'Say hello.' }];

  await check('azure chat.completions.create', async () => {
    const completion = await client.chat.completions.create({ model: AZURE_DEPLOYMENT, messages });
    const content = completion.choices[0].message.content;
    expect(content === MOCK_REPLY, `content ${show(content)}, expected ${show(MOCK_REPLY)}`);
    const usage = [completion.usage.prompt_tokens, completion.usage.completion_tokens];
    expect(same(usage, [PROMPT_TOKENS, COMPLETION_TOKENS]), `usage ${show(usage)}`);
    return show(content);
  });

  await check('azure chat.completions.create({stream: true})', async () => {
    const pieces = [];
    const stream = await client.chat.completions.create({
      model: AZURE_DEPLOYMENT,
      messages,
      stream: true,
    });
    for await (const chunk of stream) {
      expect(!chunk.usage, `a usage chunk the client did not ask for: ${show(chunk)}`);
      for (const choice of chunk.choices) {
        if (choice.delta.content) {
          pieces.push(choice.delta.content);
        }
      }
    }
    expect(same(pieces, STREAM_PARTS), `deltas ${show(pieces)}, expected ${show(STREAM_PARTS)}`);
    return `deltas ${show(pieces.join(''))}`;
  });

  await check('azure revoked key', async () => {
    const revokedClient = clientWith(REVOKED_KEY);
    const error = await refusal(() =>
      revokedClient.chat.completions.create({ model: AZURE_DEPLOYMENT, messages }),
    );
    if (!(error instanceof OpenAI.PermissionDeniedError)) {
      throw error;
    }
    expectRevoked(error, error.status, [error.code, error.error]);
    return `PermissionDeniedError ${error.status} code=${show(error.code)}`;
  });
}

// --- google-genai ------------------------------------------------------------------------

async function geminiChecks() {
  const clientWith = (apiKey) =>
    new GoogleGenAI({ apiKey, httpOptions: { baseUrl: `${GATEWAY_URL}/gemini` } });
  const client = clientWith(KEY);

  await check('google-genai models.generateContent', async () => {
    const response = await client.models.generateContent({
      model: GEMINI_MODEL,
      contents: 'Say hello.',
    });
    const text = response.text;
    expect(text != null && text.includes('part'), `text ${show(text)}`);
    const usage = response.usageMetadata;
    expect(
      usage != null &&
        same(
          [usage.promptTokenCount, usage.candidatesTokenCount],
          [PROMPT_TOKENS, COMPLETION_TOKENS],
        ),
      `usage ${show(usage)}`,
    );
    return show(text);
  });

  await check('google-genai models.generateContentStream', async () => {
    const pieces = [];
    let usage = null;
    const stream = await client.models.generateContentStream({
      model: GEMINI_MODEL,
      contents: 'Say hello.',
    });
    for await (const chunk of stream) {
      if (chunk.text) {
        pieces.push(chunk.text);
      }
      usage = chunk.usageMetadata ?? usage;
    }
    expect(same(pieces, STREAM_PARTS), `chunks ${show(pieces)}, expected ${show(STREAM_PARTS)}`);
    expect(
      usage != null && usage.candidatesTokenCount === COMPLETION_TOKENS,
      `last usage ${show(usage)}`,
    );
    return `chunks ${show(pieces.join(''))}`;
  });

  await check('google-genai revoked key', async () => {
    const revokedClient = clientWith(REVOKED_KEY);
    const error = await refusal(() =>
      revokedClient.models.generateContent({ model: GEMINI_MODEL, contents: 'hi' }),
    );
    // The Node SDK has one error class for every HTTP error (Python's ClientError is a 4xx).
    if (!(error instanceof ApiError)) {
      throw error;
    }
    expectRevoked(error, error.status, [error.message]);
    return `ApiError ${error.status} ${show(error.message)}`;
  });

  await check('google-genai models.list', async () => {
    const names = [];
    for await (const model of await client.models.list()) {
      names.push(model.name);
    }
    expect(names.includes(`models/${GEMINI_MODEL}`), `models ${show(names)}`);
    return names.join(', ');
  });

  await check('google-genai files.upload', async () => {
    // Two steps: `start` through the gateway, then the bytes to the URL its answer names,
    // which must be the gateway's again (SPEC section 3: the SDK works unchanged).
    const file = await client.files.upload({
      file: new Blob([UPLOAD_TEXT], { type: 'text/plain' }),
      config: { mimeType: 'text/plain', displayName: 'notes' },
    });
    expect(file.name === 'files/mock-upload-1', `file ${show(file)}`);
    expect(Number(file.sizeBytes) === UPLOAD_TEXT.length, `size ${show(file.sizeBytes)}`);
    return `${file.name}, ${file.sizeBytes} bytes`;
  });
}

const SUITES = {
  openai: async () => {
    await openaiChecks('/openai/v1');
    await openaiChecks('/v1');
  },
  anthropic: anthropicChecks,
  gemini: geminiChecks,
  // Configured providers (SPEC section 10), as tests/e2e/providers.rs configures them.
  'configured-openai': async () => {
    await openaiChecks('/local-llama/v1');
    await openaiChecks('/groq/v1');
  },
  'configured-anthropic': () => anthropicChecks('/claude-proxy'),
  azure: azureChecks,
};

/** The installed version of a package, from its package.json. */
function versionOf(name) {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve(name));
  for (;;) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (manifest.name === name) {
        return manifest.version;
      }
    } catch {
      // Not here: one folder up.
    }
    const up = dirname(dir);
    if (up === dir) {
      return 'unknown';
    }
    dir = up;
  }
}

async function main() {
  const args = process.argv.slice(2);
  const names = args.length > 0 ? args : ['openai', 'anthropic', 'gemini'];
  const unknown = names.filter((name) => !(name in SUITES));
  if (unknown.length > 0) {
    console.log(`unknown SDK ${show(unknown)}; choose from ${show(Object.keys(SUITES))}`);
    process.exit(2);
  }
  console.log(
    `SDKs: openai ${versionOf('openai')}, @anthropic-ai/sdk ${versionOf('@anthropic-ai/sdk')}, ` +
      `@google/genai ${versionOf('@google/genai')}; node ${process.version}; ` +
      `gateway ${GATEWAY_URL}`,
  );
  for (const name of names) {
    await SUITES[name]();
  }
  console.log(`all ${names.join(', ')} SDK checks passed`);
}

await main();
