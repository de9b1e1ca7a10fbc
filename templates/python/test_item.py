import unittest

from item import InvalidInput, item_id, item_url


class ItemTest(unittest.TestCase):
    def test_the_id_is_read_and_encoded(self):
        self.assertEqual(item_id('{"id": "a b"}'), "a b")
        with self.assertRaises(InvalidInput):
            item_id('{"id": ""}')
        with self.assertRaises(InvalidInput):
            item_id("not json")
        self.assertEqual(
            item_url("https://api.example.com/", "a b/c"),
            "https://api.example.com/items/a%20b%2Fc",
        )


if __name__ == "__main__":
    unittest.main()
