// `rest-js`: the `rest-json` connector in JavaScript — the same operations, configuration,
// secret and errors — calling the API with the ordinary `fetch()` (wasi:http underneath, under
// the same outbound policy as every other connector).
import { get as secret } from 'gantry:connector/secrets@0.1.0';
import { get as configValue } from 'wasi:config/store@0.2.0-rc.1';

const objectSchema = (properties, required) =>
  JSON.stringify({ type: 'object', properties, required });
const requestSchema = (withBody) =>
  objectSchema(
    withBody
      ? { path: { type: 'string', pattern: '^/' }, body: {} }
      : { path: { type: 'string', pattern: '^/' } },
    ['path'],
  );
const responseSchema = objectSchema(
  { status: { type: 'integer' }, body: {} },
  ['status', 'body'],
);

// A connector error: `invoke` throws it and the host receives the `connector-error` variant.
const fail = (tag, message) => ({ tag, val: message });
const config = (key) => configValue(key) ?? undefined;

async function call(method, input) {
  const base = config('base_url');
  if (base === undefined) throw fail('internal', 'config `base_url` is not set');
  if (typeof input.path !== 'string') throw fail('invalid-input', '`path` must be a string');
  if (!input.path.startsWith('/')) throw fail('invalid-input', '`path` must start with `/`');
  const headers = { accept: 'application/json' };
  const key = secret('api_key');
  if (key !== undefined) {
    headers[config('auth_header') ?? 'authorization'] = `${config('auth_scheme') ?? 'Bearer'} ${key}`;
  }
  let body;
  if (input.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(input.body);
  }
  let response;
  try {
    response = await fetch(base.replace(/\/+$/, '') + input.path, {
      method,
      headers,
      body,
      redirect: 'manual',
    });
  } catch (e) {
    throw fail('upstream', `request failed: ${e}`);
  }
  const text = await response.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  const status = response.status;
  if (status === 401 || status === 403) throw fail('unauthorized', `HTTP ${status}`);
  if (status === 404) throw fail('not-found', `${input.path}: HTTP 404`);
  if (status === 429) throw fail('rate-limited', 'HTTP 429');
  if (status >= 500) throw fail('upstream', `HTTP ${status}`);
  return { status, body: parsed };
}

export const connector = {
  describe() {
    return {
      name: 'rest-js',
      version: '1.0.0',
      description: 'Call any JSON REST API with an API key (JavaScript)',
      operations: [
        {
          name: 'echo',
          description: 'Answer the input document unchanged',
          inputSchema: JSON.stringify({ type: 'object' }),
          outputSchema: JSON.stringify({ type: 'object' }),
        },
        {
          name: 'get',
          description: 'GET `path` relative to `base_url`',
          inputSchema: requestSchema(false),
          outputSchema: responseSchema,
        },
        {
          name: 'post',
          description: 'POST `body` as JSON to `path`',
          inputSchema: requestSchema(true),
          outputSchema: responseSchema,
        },
      ],
      config: [
        { name: 'base_url', description: 'Base URL of the API', defaultValue: undefined, required: true },
        { name: 'auth_header', description: 'Header carrying the key', defaultValue: 'authorization', required: false },
        { name: 'auth_scheme', description: 'Prefix of the key in the header', defaultValue: 'Bearer', required: false },
      ],
      secrets: [{ name: 'api_key', description: 'The API key', required: false }],
      outboundHosts: ['*'],
    };
  },

  async invoke(operation, text) {
    let input;
    try {
      input = JSON.parse(text);
    } catch (e) {
      throw fail('invalid-input', `input is not JSON: ${e.message}`);
    }
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw fail('invalid-input', 'input must be a JSON object');
    }
    switch (operation) {
      case 'echo':
        return JSON.stringify(input);
      case 'get':
        return JSON.stringify(await call('GET', input));
      case 'post':
        return JSON.stringify(await call('POST', input));
      default:
        throw fail('not-found', `unknown operation \`${operation}\``);
    }
  },
};
