//! G.711 µ-law (PCMU) and A-law (PCMA) codecs.
//!
//! All four directions are lookup tables built at compile time, so the per-sample cost is one
//! load and nothing here allocates: callers pass slices they own (the RTP path reuses
//! fixed buffers). The table contents follow the ITU-T G.711 segment layout as published in
//! the classic Sun reference implementation; the tests check the well-known code points.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
const ULAW_SEGMENT_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// The µ-law byte for digital silence (what an idle PCMU stream carries).
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law byte for digital silence.
pub const ALAW_SILENCE: u8 = 0xD5;

const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut index = 0;
    while index < 8 {
        if value <= ends[index] {
            return index;
        }
        index += 1;
    }
    8
}

/// µ-law works on 14-bit magnitudes, so the table is indexed by `sample >> 2` (16384 entries).
const fn encode_ulaw_14bit(mut value: i32) -> u8 {
    let mask: i32 = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    if value > ULAW_CLIP {
        value = ULAW_CLIP;
    }
    value += ULAW_BIAS >> 2;
    let seg = segment(value, &ULAW_SEGMENT_END);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let code = ((seg as i32) << 4) | ((value >> (seg + 1)) & 0xF);
    (code ^ mask) as u8
}

/// A-law works on 13-bit magnitudes, so the table is indexed by `sample >> 3` (8192 entries).
const fn encode_alaw_13bit(mut value: i32) -> u8 {
    let mask: i32 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &ALAW_SEGMENT_END);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut code = (seg as i32) << 4;
    if seg < 2 {
        code |= (value >> 1) & 0xF;
    } else {
        code |= (value >> seg) & 0xF;
    }
    (code ^ mask) as u8
}

const fn decode_ulaw_byte(byte: u8) -> i16 {
    let inverted = !byte as i32;
    let mut magnitude = ((inverted & 0x0F) << 3) + ULAW_BIAS;
    magnitude <<= (inverted & 0x70) >> 4;
    if inverted & 0x80 != 0 {
        (ULAW_BIAS - magnitude) as i16
    } else {
        (magnitude - ULAW_BIAS) as i16
    }
}

const fn decode_alaw_byte(byte: u8) -> i16 {
    let toggled = (byte ^ 0x55) as i32;
    let mut magnitude = (toggled & 0x0F) << 4;
    let seg = (toggled & 0x70) >> 4;
    match seg {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => {
            magnitude += 0x108;
            magnitude <<= seg - 1;
        }
    }
    if toggled & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

static ULAW_ENCODE: [u8; 16384] = {
    let mut table = [0u8; 16384];
    let mut index = 0;
    while index < 16384 {
        // Reinterpret the 14-bit index as a signed value (two's complement of the top bits).
        let signed = if index >= 8192 {
            index as i32 - 16384
        } else {
            index as i32
        };
        table[index] = encode_ulaw_14bit(signed);
        index += 1;
    }
    table
};

static ALAW_ENCODE: [u8; 8192] = {
    let mut table = [0u8; 8192];
    let mut index = 0;
    while index < 8192 {
        let signed = if index >= 4096 {
            index as i32 - 8192
        } else {
            index as i32
        };
        table[index] = encode_alaw_13bit(signed);
        index += 1;
    }
    table
};

static ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut index = 0;
    while index < 256 {
        table[index] = decode_ulaw_byte(index as u8);
        index += 1;
    }
    table
};

static ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut index = 0;
    while index < 256 {
        table[index] = decode_alaw_byte(index as u8);
        index += 1;
    }
    table
};

/// Encodes one linear sample to µ-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    ULAW_ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// Encodes one linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 3) as u16 & 0x1FFF) as usize]
}

/// Decodes one µ-law byte.
#[inline]
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_DECODE[byte as usize]
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_DECODE[byte as usize]
}

/// Encodes `min(input.len(), output.len())` samples and returns how many were written.
pub fn encode_ulaw(input: &[i16], output: &mut [u8]) -> usize {
    let count = input.len().min(output.len());
    for (out, &sample) in output[..count].iter_mut().zip(input) {
        *out = linear_to_ulaw(sample);
    }
    count
}

/// Encodes `min(input.len(), output.len())` samples and returns how many were written.
pub fn encode_alaw(input: &[i16], output: &mut [u8]) -> usize {
    let count = input.len().min(output.len());
    for (out, &sample) in output[..count].iter_mut().zip(input) {
        *out = linear_to_alaw(sample);
    }
    count
}

/// Decodes `min(input.len(), output.len())` bytes and returns how many samples were written.
pub fn decode_ulaw(input: &[u8], output: &mut [i16]) -> usize {
    let count = input.len().min(output.len());
    for (out, &byte) in output[..count].iter_mut().zip(input) {
        *out = ulaw_to_linear(byte);
    }
    count
}

/// Decodes `min(input.len(), output.len())` bytes and returns how many samples were written.
pub fn decode_alaw(input: &[u8], output: &mut [i16]) -> usize {
    let count = input.len().min(output.len());
    for (out, &byte) in output[..count].iter_mut().zip(input) {
        *out = alaw_to_linear(byte);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_code_points_match_g711() {
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert_eq!(alaw_to_linear(ALAW_SILENCE), 8);
    }

    #[test]
    fn extreme_code_points_match_g711() {
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn ulaw_code_round_trip_is_identity_except_negative_zero() {
        for byte in 0..=255u8 {
            let decoded = ulaw_to_linear(byte);
            let reencoded = linear_to_ulaw(decoded);
            // 0x7F is µ-law "negative zero": it decodes to 0, which encodes as positive zero.
            if byte == 0x7F {
                assert_eq!(reencoded, 0xFF);
            } else {
                assert_eq!(reencoded, byte, "µ-law byte {byte:#04x}");
            }
        }
    }

    #[test]
    fn alaw_code_round_trip_is_identity() {
        for byte in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(byte)),
                byte,
                "A-law byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn linear_round_trip_error_is_within_quantisation_step() {
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let ulaw = ulaw_to_linear(linear_to_ulaw(sample)) as i32;
            let alaw = alaw_to_linear(linear_to_alaw(sample)) as i32;
            let value = sample as i32;
            // Companding error grows with magnitude: about 1/16 of the value, plus a small floor.
            let allowed = value.abs() / 16 + 16;
            assert!(
                (ulaw - value).abs() <= allowed.max(300),
                "µ-law {sample} -> {ulaw}"
            );
            assert!(
                (alaw - value).abs() <= allowed.max(300),
                "A-law {sample} -> {alaw}"
            );
            if value.abs() < 30000 {
                assert!((ulaw - value).abs() <= allowed, "µ-law {sample} -> {ulaw}");
                assert!((alaw - value).abs() <= allowed, "A-law {sample} -> {alaw}");
            }
        }
    }

    #[test]
    fn slice_functions_respect_the_shorter_buffer() {
        let input = [0i16, 1000, -1000, 32000];
        let mut encoded = [0u8; 3];
        assert_eq!(encode_ulaw(&input, &mut encoded), 3);
        let mut decoded = [0i16; 8];
        assert_eq!(decode_ulaw(&encoded, &mut decoded), 3);
        assert!((decoded[1] - 1000).abs() < 64);
        assert!((decoded[2] + 1000).abs() < 64);
        assert_eq!(encode_alaw(&input, &mut encoded), 3);
        assert_eq!(decode_alaw(&encoded, &mut decoded), 3);
        assert!((decoded[1] - 1000).abs() < 64);
    }
}
