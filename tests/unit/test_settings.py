"""Encoding settings: validation, the wire form a worker trusts, and the CLI parsers."""
from __future__ import annotations

from decimal import Decimal

import pytest

from ffdt.common.errors import ProtocolError, UsageError
from ffdt.common.settings import Settings, parse_rate, parse_scale


def test_defaults_are_valid_h264():
    s = Settings()
    assert s.vcodec == "libx264" and s.codec == "h264"


@pytest.mark.parametrize("vcodec, codec", [("libx265", "hevc"), ("libvpx-vp9", "vp9"), ("libsvtav1", "av1"),
                                           ("libaom-av1", "av1"), ("mpeg4", "mpeg4")])
def test_codec_names_the_format_each_encoder_produces(vcodec, codec):
    assert Settings(vcodec=vcodec).codec == codec


@pytest.mark.parametrize("vcodec", ["h264", "x264", "libx264 -f", "", "LIBX264"])
def test_unknown_video_encoder_is_refused(vcodec):
    with pytest.raises(UsageError, match="unsupported video encoder"):
        Settings(vcodec=vcodec)


@pytest.mark.parametrize("vcodec, lo, hi", [("libx264", 0, 51), ("libx265", 0, 51), ("libvpx-vp9", 0, 63),
                                            ("libsvtav1", 0, 63), ("mpeg4", 1, 31)])
def test_crf_range_is_per_encoder_and_inclusive(vcodec, lo, hi):
    assert Settings(vcodec=vcodec, crf=lo).crf == lo
    assert Settings(vcodec=vcodec, crf=hi).crf == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(UsageError, match="--crf"):
            Settings(vcodec=vcodec, crf=bad)


def test_a_fractional_crf_is_for_x264_and_x265_only():
    assert Settings(vcodec="libx264", crf=22.5).crf == 22.5
    assert Settings.from_wire({"vcodec": "libx265", "crf": 27.25}).crf == 27.25
    assert Settings.from_wire({"crf": 22.0}).crf == 22 and isinstance(Settings.from_wire({"crf": 22.0}).crf, int)
    for vcodec in ("libvpx-vp9", "libsvtav1", "libaom-av1", "mpeg4"):
        with pytest.raises(UsageError, match="whole numbers"):
            Settings(vcodec=vcodec, crf=10.5)
    with pytest.raises(ProtocolError, match="crf must be a number"):
        Settings.from_wire({"crf": "23"})


def test_crf_and_vbitrate_together_are_refused():
    with pytest.raises(UsageError, match="not both"):
        Settings(crf=23, vbitrate=2_000_000)


@pytest.mark.parametrize("name", ["vbitrate", "maxrate", "bufsize"])
def test_rates_must_be_between_1k_and_10g(name):
    assert getattr(Settings(**{name: 1000}), name) == 1000
    assert getattr(Settings(**{name: 10**10}), name) == 10**10
    for bad in (999, 10**10 + 1, 0, -5000):
        with pytest.raises(UsageError):
            Settings(**{name: bad})


@pytest.mark.parametrize("vcodec, good, bad", [
    ("libx264", "veryslow", "8"),
    ("libx265", "ultrafast", "fastest"),
    ("libvpx-vp9", "8", "slow"),
    ("libvpx-vp9", "0", "9"),
    ("libsvtav1", "13", "14"),
    ("libaom-av1", "8", "medium"),
])
def test_preset_must_suit_the_encoder(vcodec, good, bad):
    assert Settings(vcodec=vcodec, preset=good).preset == good
    with pytest.raises(UsageError, match="--preset"):
        Settings(vcodec=vcodec, preset=bad)


def test_mpeg4_takes_no_preset_at_all():
    with pytest.raises(UsageError, match="choose from none"):
        Settings(vcodec="mpeg4", preset="medium")


@pytest.mark.parametrize("fps", ["30", "25", "30000/1001", "1", "120/1"])
def test_good_frame_rates(fps):
    assert Settings(fps=fps).fps == fps


@pytest.mark.parametrize("fps", ["0", "30/0", "29.97", "-30", "30/", "/1001", "ntsc", "30,scale=1:1", "30 ",
                                 "1234567"])
def test_bad_frame_rates_are_refused(fps):
    with pytest.raises(UsageError, match="--fps"):
        Settings(fps=fps)


def test_scale_needs_both_sides():
    with pytest.raises(UsageError, match="both"):
        Settings(scale_w=1280)
    with pytest.raises(UsageError, match="both"):
        Settings(scale_h=720)


@pytest.mark.parametrize("w, h", [(1280, 720), (1280, -2), (-1, 480), (2, 16384)])
def test_good_scales(w, h):
    s = Settings(scale_w=w, scale_h=h)
    assert (s.scale_w, s.scale_h) == (w, h)


@pytest.mark.parametrize("w, h", [(1, 720), (0, 720), (1280, -3), (16385, 720), (1280, 0)])
def test_bad_scales_are_refused(w, h):
    with pytest.raises(UsageError, match="--scale"):
        Settings(scale_w=w, scale_h=h)


def test_pix_fmt_is_whitelisted():
    assert Settings(pix_fmt="yuv420p10le").pix_fmt == "yuv420p10le"
    with pytest.raises(UsageError, match="--pix-fmt"):
        Settings(pix_fmt="rgb24")


# ---------------------------------------------------------------- the wire form

def test_wire_round_trip_keeps_every_value():
    s = Settings(vcodec="libvpx-vp9", crf=30, maxrate=3_000_000, bufsize=6_000_000, preset="4",
                 pix_fmt="yuv420p", scale_w=640, scale_h=-2, fps="24000/1001")
    wire = s.to_wire()
    assert "vbitrate" not in wire                  # None values are left out
    assert Settings.from_wire(wire) == s


def test_from_wire_ignores_unknown_keys():
    s = Settings.from_wire({"vcodec": "libx265", "crf": 20, "filter_complex": "evil", "x": [1]})
    assert s == Settings(vcodec="libx265", crf=20)


def test_from_wire_treats_null_as_absent():
    assert Settings.from_wire({"crf": None, "preset": None}) == Settings()


@pytest.mark.parametrize("data", [None, [], "libx264", 5])
def test_from_wire_needs_an_object(data):
    with pytest.raises(ProtocolError):
        Settings.from_wire(data)


@pytest.mark.parametrize("data", [
    {"crf": "23"},
    {"crf": float("nan")},
    {"crf": True},
    {"vbitrate": False},
    {"vcodec": 264},
    {"fps": 30},
    {"scale_w": "1280", "scale_h": 720},
    {"preset": ["slow"]},
], ids=["crf-str", "crf-nan", "crf-bool", "vbitrate-bool", "vcodec-int", "fps-int", "scale-str", "preset-list"])
def test_from_wire_rejects_wrong_types_as_protocol_errors(data):
    with pytest.raises(ProtocolError):
        Settings.from_wire(data)


@pytest.mark.parametrize("data", [
    {"vcodec": "h264"},
    {"vcodec": "libx264", "crf": 99},
    {"vcodec": "libvpx-vp9", "crf": 30.5},
    {"crf": 20, "vbitrate": 2_000_000},
    {"fps": "30;rm -rf /"},
], ids=["unknown-vcodec", "crf-range", "crf-fraction-vp9", "crf-and-bitrate", "fps-text"])
def test_from_wire_rejects_bad_values_as_protocol_errors_not_usage_errors(data):
    with pytest.raises(ProtocolError, match="settings rejected"):
        Settings.from_wire(data)


# ---------------------------------------------------------------- parsers

@pytest.mark.parametrize("text, bps", [
    ("800", 800),
    ("2500k", 2_500_000),
    ("2500K", 2_500_000),
    ("2.5M", 2_500_000),
    ("2.5m", 2_500_000),
    (" 1M ", 1_000_000),
    ("0.5k", 500),
    ("128k", 128_000),
])
def test_parse_rate(text, bps):
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["4.1M", "8.2M", "32.3k", "64.1k"])
def test_parse_rate_is_exact_for_decimal_input(text):
    number, unit = text[:-1], text[-1].lower()
    expected = int(Decimal(number) * {"k": 1000, "m": 1_000_000}[unit])
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "2.5G", "-1k", "1e6", "2,5M", "k", "1.k", "0x10"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(UsageError, match="bad bit rate"):
        parse_rate(text)


@pytest.mark.parametrize("text, size", [("1280:720", (1280, 720)), ("1280:-2", (1280, -2)), ("-1:480", (-1, 480))])
def test_parse_scale(text, size):
    assert parse_scale(text) == size


@pytest.mark.parametrize("text", ["1280", "1280x720", "a:b", "1280:", ":720", "1280:720:1", ""])
def test_parse_scale_refuses_nonsense(text):
    with pytest.raises(UsageError, match="--scale"):
        parse_scale(text)


def test_colour_and_hdr_values_are_whitelisted():
    ok = Settings(vcodec="libx265", color_primaries="bt2020", color_trc="smpte2084", colorspace="bt2020nc",
                  color_range="tv", master_display="G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
                  "L(10000000,50)", max_cll="1000,400")
    assert Settings.from_wire(ok.to_wire()) == ok
    for bad in ({"color_trc": "smpte2084:x265-params=evil"}, {"colorspace": "nope"},
                {"master_display": "G(1,2)B(3,4)R(5,6)WP(7,8)L(9,10):hdr=1"}, {"max_cll": "1000;400"}):
        with pytest.raises(ProtocolError):
            Settings.from_wire({"vcodec": "libx265", **bad})


# ---------------------------------------------------------------- tuning (--tune, --profile, --level, params)

def test_tuning_goes_over_the_wire_and_back_as_checked_values():
    from ffdt.common.settings import parse_codec_params
    s = Settings(tune="grain", profile="high", level="4.1", codec_params=parse_codec_params("ref=2:deblock=-1,-1"))
    wire = s.to_wire()
    assert wire["codec_params"] == {"deblock": "-1,-1", "ref": "2"}
    assert Settings.from_wire(wire) == s
    assert "codec_params" not in Settings().to_wire()


@pytest.mark.parametrize("params, why", [
    ({"stats": "/etc/passwd"}, "not one this tool passes on"),     # a file name
    ({"open-gop": "1"}, "not one this tool passes on"),            # the warm-up needs closed GOPs
    ({"ref": "3:stats=/tmp/x"}, "takes a whole number"),            # another key smuggled in a value
    ({"ref": "99"}, "in 1..16"),
    ({"aq-strength": "nan"}, "takes a number"),
    ({"me": "../x"}, "dia, hex"),
    ({"deblock": "1,2,3"}, "two whole numbers"),
])
def test_a_peer_cannot_pass_other_encoder_parameters(params, why):
    with pytest.raises(ProtocolError, match=why):
        Settings.from_wire({"vcodec": "libx264", "codec_params": params})


def test_tuning_is_refused_where_the_encoder_has_no_such_thing():
    with pytest.raises(UsageError, match="takes no --tune"):
        Settings(vcodec="mpeg4", tune="film")
    with pytest.raises(UsageError, match="takes no encoder parameters"):
        Settings(vcodec="libvpx-vp9", codec_params=(("ref", "2"),))
    with pytest.raises(ProtocolError, match="at most 32"):
        Settings.from_wire({"codec_params": {f"k{i}": "1" for i in range(40)}})
    with pytest.raises(ProtocolError, match="codec_params must be"):
        Settings.from_wire({"codec_params": ["ref=2"]})
