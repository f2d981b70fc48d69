"""Writing node.conf syntax (``qvd.config.format_properties``): what the parser reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from qvd.config import escape, format_properties, parse_properties


class FormatPropertiesTests(unittest.TestCase):
    @given(st.dictionaries(st.text(min_size=1), st.text()))
    def test_any_values_read_back_unchanged(self, values):
        self.assertEqual(parse_properties(format_properties(values, "a header")), values)

    def test_the_text_is_one_plain_line_per_key(self):
        text = format_properties({"vma.on_action.connect": "/bin/hook --x=1",
                                  "path.run": "/var/run/qvd"}, "generated")
        self.assertEqual(text, "# generated\npath.run = /var/run/qvd\n"
                               "vma.on_action.connect = /bin/hook --x=1\n")

    def test_what_would_break_a_line_or_be_stripped_is_escaped(self):
        self.assertEqual(escape("a\nb\\c"), "a\\nb\\\\c")
        self.assertEqual(escape("  x y"), "\\ \\ x y")
        self.assertEqual(escape("#a b=c", key=True), "\\#a\\ b\\=c")
