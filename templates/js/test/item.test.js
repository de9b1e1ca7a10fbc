import assert from 'node:assert/strict';
import { test } from 'node:test';
import { itemId, itemUrl } from '../src/item.js';

test('the id is read and encoded', () => {
  assert.equal(itemId('{"id": "a b"}'), 'a b');
  assert.throws(() => itemId('{"id": ""}'), (e) => e.tag === 'invalid-input');
  assert.throws(() => itemId('not json'), (e) => e.tag === 'invalid-input');
  assert.equal(itemUrl('https://api.example.com/', 'a b/c'), 'https://api.example.com/items/a%20b%2Fc');
});
