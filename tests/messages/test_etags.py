"""ETags and If-Match / If-None-Match lists, as pure functions."""

import pytest

from quoteapi.messages.etags import TagList, etag


def test_a_version_is_quoted_as_a_strong_etag() -> None:
    assert etag(42) == '"42"'


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"42"', (42,)),
        ('"1", "2" ,"3"', (1, 2, 3)),
        ('W/"7"', (7,)),  # If-None-Match compares weakly
        ('"x", 42, "", "9223372036854775808"', ()),  # not ours, unquoted, empty, over bigint
        ('"٣"', ()),  # non-ASCII digits name no version
    ],
)
def test_a_tag_list_names_the_versions_it_quotes(header: str, versions: tuple[int, ...]) -> None:
    tags = TagList.parse(header)
    assert not tags.any
    assert tags.versions == versions


# Entity-tags compare character by character (RFC 9110, section 8.8.3.2), weakly too: only
# the canonical decimal form, as `etag` writes it, names a version.
@pytest.mark.parametrize("header", ['"07"', '"0042"', '"00"', 'W/"07"'])
@pytest.mark.parametrize("strong", [True, False], ids=["if-match", "if-none-match"])
def test_a_tag_with_leading_zeros_names_no_version(header: str, strong: bool) -> None:
    assert TagList.parse(header, strong=strong).versions == ()


def test_the_strong_comparison_of_if_match_leaves_weak_tags_out() -> None:
    assert TagList.parse('W/"7", "8"', strong=True).versions == (8,)


def test_a_star_matches_any_stored_version() -> None:
    assert TagList.parse(" * ").matches(12345)


def test_a_star_among_tags_is_no_star() -> None:
    # As the router hands over two field lines, `*` and then `"7"`.
    tags = TagList.parse('*, "7"')
    assert not tags.any
    assert tags.versions == (7,)


def test_a_list_matches_only_the_versions_it_names() -> None:
    tags = TagList.parse('"1", W/"3"')
    assert tags.matches(3)
    assert not tags.matches(2)
