// The parts of `get-item` that need no host: plain JavaScript, tested by `npm test`.

/** A connector error: `invoke` throws it and the host receives the `connector-error` variant. */
export const fail = (tag, message) => ({ tag, val: message });

/** The item's id from the input document (the host has checked it against the input schema). */
export function itemId(text) {
  let input;
  try {
    input = JSON.parse(text);
  } catch (e) {
    throw fail('invalid-input', `input is not JSON: ${e.message}`);
  }
  if (typeof input?.id !== 'string' || input.id === '') {
    throw fail('invalid-input', '`id` must be a non-empty string');
  }
  return input.id;
}

/** `{base}/items/{id}`, the id percent-encoded. */
export const itemUrl = (base, id) => `${base.replace(/\/+$/, '')}/items/${encodeURIComponent(id)}`;
