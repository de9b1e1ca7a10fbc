// `{{name}}`: a Gantry connector. `get-item` reads one item of a JSON API:
// `GET {base_url}/items/{id}` with the secret `api_key` as a bearer token, through the ordinary
// `fetch()` (wasi:http underneath, under the install's outbound grants).
import { get as secret } from 'gantry:connector/secrets@0.1.0';
import { get as configValue } from 'wasi:config/store@0.2.0-rc.1';
import { fail, itemId, itemUrl } from './item.js';

async function getItem(input) {
  const id = itemId(input);
  const base = configValue('base_url') ?? 'https://api.example.com';
  const key = secret('api_key');
  if (key === undefined) throw fail('unauthorized', 'the secret `api_key` is not set');
  let response;
  try {
    response = await fetch(itemUrl(base, id), {
      headers: { accept: 'application/json', authorization: `Bearer ${key}` },
    });
  } catch (e) {
    throw fail('upstream', `request failed: ${e}`);
  }
  const status = response.status;
  if (status === 401 || status === 403) throw fail('unauthorized', `HTTP ${status}`);
  if (status === 404) throw fail('not-found', `no item \`${id}\``);
  if (status === 429) throw fail('rate-limited', 'HTTP 429');
  if (status < 200 || status > 299) throw fail('upstream', `HTTP ${status}`);
  let item;
  try {
    item = await response.json();
  } catch (e) {
    throw fail('upstream', `the answer is not JSON: ${e}`);
  }
  return { id, item };
}

export const connector = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'Reads items of the Example API',
      operations: [
        {
          name: 'get-item',
          description: 'One item by its id',
          inputSchema: JSON.stringify({
            type: 'object',
            properties: { id: { type: 'string', minLength: 1 } },
            required: ['id'],
            additionalProperties: false,
            examples: [{ id: '42' }],
          }),
          outputSchema: JSON.stringify({
            type: 'object',
            properties: { id: { type: 'string' }, item: {} },
            required: ['id', 'item'],
          }),
        },
      ],
      config: [
        {
          name: 'base_url',
          description: 'Base URL of the API',
          defaultValue: 'https://api.example.com',
          required: false,
        },
      ],
      secrets: [{ name: 'api_key', description: 'API key, sent as a bearer token', required: true }],
      // Every origin the connector may call; an install grants some or all of them.
      outboundHosts: ['https://api.example.com'],
    };
  },

  async invoke(operation, input) {
    switch (operation) {
      case 'get-item':
        return JSON.stringify(await getItem(input));
      default:
        throw fail('not-found', `no operation \`${operation}\``);
    }
  },
};
