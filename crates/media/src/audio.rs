//! Audio the edge plays itself: music on hold and spoken prompts, as 8 kHz linear PCM encoded
//! once to G.711 (PCMU and PCMA) in 20 ms frames, so that playing to a thousand calls costs a
//! copy and a send per packet and no encoding.

use std::sync::Arc;

/// Samples per 20 ms frame at 8 kHz; also the RTP timestamp step.
pub const FRAME: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Some(Codec::Pcmu),
            "PCMA" => Some(Codec::Pcma),
            _ => None,
        }
    }
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("reading WAV: {0}")]
    Wav(#[from] hound::Error),
    #[error(
        "WAV must be 8000 Hz, mono, 16-bit PCM (found {rate} Hz, {channels} channels, {bits} bits)"
    )]
    Format { rate: u32, channels: u16, bits: u16 },
    #[error("WAV holds no audio")]
    Empty,
}

/// A piece of audio encoded for both codecs, in whole 20 ms frames.
#[derive(Debug)]
pub struct Clip {
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

impl Clip {
    /// Encode linear samples (8 kHz mono); the last frame is padded with silence.
    pub fn from_samples(samples: &[i16]) -> Clip {
        let n = samples.len().div_ceil(FRAME).max(1) * FRAME;
        let mut pcmu = Vec::with_capacity(n);
        let mut pcma = Vec::with_capacity(n);
        for i in 0..n {
            let s = samples.get(i).copied().unwrap_or(0);
            pcmu.push(linear_to_ulaw(s));
            pcma.push(linear_to_alaw(s));
        }
        Clip { pcmu, pcma }
    }

    /// An 8 kHz mono 16-bit WAV file's contents.
    pub fn from_wav(bytes: &[u8]) -> Result<Clip, AudioError> {
        let mut r = hound::WavReader::new(std::io::Cursor::new(bytes))?;
        let s = r.spec();
        if s.sample_rate != 8000
            || s.channels != 1
            || s.bits_per_sample != 16
            || s.sample_format != hound::SampleFormat::Int
        {
            return Err(AudioError::Format {
                rate: s.sample_rate,
                channels: s.channels,
                bits: s.bits_per_sample,
            });
        }
        let samples: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>()?;
        if samples.is_empty() {
            return Err(AudioError::Empty);
        }
        Ok(Clip::from_samples(&samples))
    }

    pub fn from_wav_file(path: &str) -> Result<Clip, AudioError> {
        let bytes = std::fs::read(path).map_err(hound::Error::IoError)?;
        Clip::from_wav(&bytes)
    }

    pub fn frames(&self) -> usize {
        self.pcmu.len() / FRAME
    }

    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(20 * self.frames() as u64)
    }

    /// Frame `i` (wrapping) in `codec`.
    pub fn frame(&self, codec: Codec, i: usize) -> &[u8] {
        let i = i % self.frames();
        let b = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        };
        &b[i * FRAME..(i + 1) * FRAME]
    }

    /// Several clips one after the other (a sentence of prompts).
    pub fn concat(parts: &[&Clip]) -> Clip {
        Clip {
            pcmu: parts.iter().flat_map(|c| c.pcmu.iter().copied()).collect(),
            pcma: parts.iter().flat_map(|c| c.pcma.iter().copied()).collect(),
        }
    }
}

/// The built-in music on hold: a 16-second loop of soft arpeggiated chords over a bass line
/// (C, A minor, F, G), synthesised at start. Music-like on purpose: silence or a test tone would
/// make callers think they were cut off.
pub fn builtin_music() -> Clip {
    const RATE: f32 = 8000.0;
    // Chords as MIDI notes: root triad one octave up, bass an octave below the root.
    let chords: [[u8; 3]; 4] = [[60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62]];
    let hz = |midi: f32| 440.0 * 2f32.powf((midi - 69.0) / 12.0);
    let bar = 4.0; // seconds per chord
    let step = 0.25; // arpeggio note length
    let total = (bar * chords.len() as f32 * RATE) as usize;
    let mut out = Vec::with_capacity(total);
    for n in 0..total {
        let t = n as f32 / RATE;
        let chord = chords[(t / bar) as usize % chords.len()];
        let in_bar = t % bar;
        // Arpeggio up and down the triad plus the octave: 1 3 5 8 5 3.
        let pattern = [0usize, 1, 2, 3, 2, 1];
        let k = (in_bar / step) as usize;
        let idx = pattern[k % pattern.len()];
        let note = if idx == 3 {
            chord[0] as f32 + 12.0
        } else {
            chord[idx] as f32
        };
        let nt = in_bar % step;
        // Plucked envelope: quick attack, exponential decay.
        let env = (nt / 0.01).min(1.0) * (-nt * 6.0).exp();
        let f = hz(note);
        let w = 2.0 * std::f32::consts::PI * f * t;
        let arp = env * (w.sin() + 0.3 * (2.0 * w).sin() + 0.1 * (3.0 * w).sin());
        // Bass: the chord's root two octaves down, swelling with each bar.
        let bt = in_bar;
        let benv = (bt / 0.05).min(1.0) * (0.6 + 0.4 * (-bt * 0.8).exp());
        let bass = benv * (2.0 * std::f32::consts::PI * hz(chord[0] as f32 - 24.0) * t).sin();
        let s = 0.32 * arp + 0.22 * bass;
        out.push((s.clamp(-1.0, 1.0) * 12_000.0) as i16);
    }
    Clip::from_samples(&out)
}

/// The spoken prompts, made once with espeak-ng (`prompts/make.sh`) and compiled in.
pub struct Prompts {
    digits: [Arc<Clip>; 10],
    pub parked_on: Arc<Clip>,
    pub lot_full: Arc<Clip>,
    pub slot_taken: Arc<Clip>,
    pub park_failed: Arc<Clip>,
}

impl Prompts {
    pub fn load() -> Prompts {
        let clip = |b: &[u8]| Arc::new(Clip::from_wav(b).expect("prompt files are valid WAV"));
        macro_rules! digit {
            ($d:literal) => {
                clip(include_bytes!(concat!("../prompts/digit-", $d, ".wav")))
            };
        }
        Prompts {
            digits: [
                digit!("0"),
                digit!("1"),
                digit!("2"),
                digit!("3"),
                digit!("4"),
                digit!("5"),
                digit!("6"),
                digit!("7"),
                digit!("8"),
                digit!("9"),
            ],
            parked_on: clip(include_bytes!("../prompts/parked-on.wav")),
            lot_full: clip(include_bytes!("../prompts/lot-full.wav")),
            slot_taken: clip(include_bytes!("../prompts/slot-taken.wav")),
            park_failed: clip(include_bytes!("../prompts/park-failed.wav")),
        }
    }

    /// "Parked on seven zero one."
    pub fn parked_on(&self, slot: u32) -> Clip {
        let mut parts: Vec<&Clip> = vec![&self.parked_on];
        for d in slot.to_string().bytes() {
            parts.push(&self.digits[(d - b'0') as usize]);
        }
        Clip::concat(&parts)
    }
}

// ---------------------------------------------------------------- G.711 (ITU-T G.711, as in
// the classic Sun reference implementation)

pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84 >> 2;
    const CLIP: i32 = 8159;
    const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = (sample as i32) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(CLIP) + BIAS;
    match SEG_END.iter().position(|&e| v <= e) {
        Some(seg) => (((seg as i32) << 4 | ((v >> (seg + 1)) & 0xF)) as u8) ^ mask,
        None => 0x7F ^ mask,
    }
}

pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((((u & 0x0F) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

pub fn linear_to_alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = (sample as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    match SEG_END.iter().position(|&e| v <= e) {
        Some(seg) => {
            let q = if seg < 2 {
                (v >> 1) & 0xF
            } else {
                (v >> seg) & 0xF
            };
            (((seg as i32) << 4 | q) as u8) ^ mask
        }
        None => 0x7F ^ mask,
    }
}

pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Root-mean-square level of decoded G.711 payload (tests and checks that audio is not silence).
pub fn rms(codec: Codec, payload: &[u8]) -> f64 {
    if payload.is_empty() {
        return 0.0;
    }
    let sum: f64 = payload
        .iter()
        .map(|&b| {
            let s = match codec {
                Codec::Pcmu => ulaw_to_linear(b),
                Codec::Pcma => alaw_to_linear(b),
            } as f64;
            s * s
        })
        .sum();
    (sum / payload.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_within_quantisation() {
        for s in (-32768i32..32768).step_by(7) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let a = alaw_to_linear(linear_to_alaw(s)) as i32;
            // Logarithmic steps: error grows with magnitude, at most 1/16 of it plus a floor.
            let tol = (s as i32).abs() / 16 + 40;
            assert!((u - s as i32).abs() <= tol, "µ-law {s} → {u}");
            assert!((a - s as i32).abs() <= tol, "A-law {s} → {a}");
        }
        // Known code points: silence and full scale.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn builtin_music_is_sound_and_loops_in_whole_frames() {
        let m = builtin_music();
        assert_eq!(m.frames(), 16 * 50);
        // Every second of it is audible (no gaps of silence), in both codecs.
        for sec in 0..16 {
            let frames = sec * 50..(sec + 1) * 50;
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let level: f64 = frames
                    .clone()
                    .map(|i| rms(codec, m.frame(codec, i)))
                    .sum::<f64>()
                    / 50.0;
                assert!(level > 500.0, "second {sec} {codec:?} too quiet: {level}");
            }
        }
        // It changes: not one tone repeated.
        assert_ne!(m.frame(Codec::Pcmu, 0), m.frame(Codec::Pcmu, 200));
    }

    #[test]
    fn prompts_load_and_spell_the_slot() {
        let p = Prompts::load();
        let s = p.parked_on(701);
        let expect = p.parked_on.frames()
            + p.digits[7].frames()
            + p.digits[0].frames()
            + p.digits[1].frames();
        assert_eq!(s.frames(), expect);
        assert!(s.duration() > std::time::Duration::from_secs(1));
        let loud = (0..s.frames())
            .filter(|&i| rms(Codec::Pcma, s.frame(Codec::Pcma, i)) > 300.0)
            .count();
        assert!(loud > s.frames() / 3, "prompt mostly silent");
    }

    #[test]
    fn wav_format_is_checked() {
        let mut buf = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        let err = Clip::from_wav(buf.get_ref()).unwrap_err().to_string();
        assert!(err.contains("8000 Hz, mono"), "{err}");
        assert!(Clip::from_wav(b"not a wav").is_err());
    }
}
