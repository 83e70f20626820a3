//! What a document's content is, and what a change did to it: edited, converted to another
//! known format, destroyed, or made to look encrypted.
//!
//! Entropy alone is not trusted: XOR with 0xFF keeps it, base64 of ciphertext lowers it,
//! intermittent encryption changes a few blocks only, and compressed formats are high-entropy to
//! begin with. So a change is judged on several things at once — the format the bytes announce
//! (magic numbers), whether text stayed text, block-by-block entropy of the head of the file,
//! and whether base64 text decodes to random bytes.

/// Bytes of a file's head that are looked at (magic, text, block entropy).
pub const HEAD: usize = 64 * 1024;
/// Block size for block entropy (intermittent encryption works in such blocks).
pub const BLOCK: usize = 4096;

/// What some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing (an empty file).
    Empty,
    /// Text (UTF-8 or a legacy single-byte encoding, few control bytes).
    Text,
    /// A known format, by its magic number.
    Format(Format),
    /// Bytes of no known format.
    Binary,
}

/// Formats recognised by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PDF.
    Pdf,
    /// ZIP, and what is built on it (docx, xlsx, pptx, odt, ods, jar, epub).
    Zip,
    /// Compound File Binary (doc, xls, ppt, msg).
    Ole,
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF.
    Gif,
    /// TIFF.
    Tiff,
    /// WebP / RIFF.
    Riff,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// xz.
    Xz,
    /// bzip2.
    Bzip2,
    /// 7-Zip.
    SevenZip,
    /// RAR.
    Rar,
    /// SQLite database.
    Sqlite,
    /// OpenPGP message (gpg), binary or ASCII-armoured.
    Pgp,
    /// RTF (text, but announced).
    Rtf,
    /// QEMU qcow2 disk image.
    Qcow2,
    /// ELF executable.
    Elf,
    /// tar archive (magic at offset 257).
    Tar,
    /// Unix `ar` archive: Debian packages (`.deb`, compressed members), static libraries.
    Ar,
}

impl Format {
    /// Formats whose content is compressed or encrypted by design: high entropy is normal.
    pub fn is_dense(self) -> bool {
        matches!(
            self,
            Format::Zip
                | Format::Png
                | Format::Jpeg
                | Format::Gif
                | Format::Riff
                | Format::Gzip
                | Format::Zstd
                | Format::Xz
                | Format::Bzip2
                | Format::SevenZip
                | Format::Rar
                | Format::Pgp
                | Format::Ar
        )
    }
}

const MAGICS: &[(&[u8], Format)] = &[
    (b"%PDF-", Format::Pdf),
    (b"PK\x03\x04", Format::Zip),
    (b"PK\x05\x06", Format::Zip),
    (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", Format::Ole),
    (b"\x89PNG\r\n\x1a\n", Format::Png),
    (b"\xFF\xD8\xFF", Format::Jpeg),
    (b"GIF87a", Format::Gif),
    (b"GIF89a", Format::Gif),
    (b"II*\0", Format::Tiff),
    (b"MM\0*", Format::Tiff),
    (b"RIFF", Format::Riff),
    (b"\x1F\x8B", Format::Gzip),
    (b"\x28\xB5\x2F\xFD", Format::Zstd),
    (b"\xFD7zXZ\0", Format::Xz),
    (b"BZh", Format::Bzip2),
    (b"7z\xBC\xAF\x27\x1C", Format::SevenZip),
    (b"Rar!\x1A\x07", Format::Rar),
    (b"SQLite format 3\0", Format::Sqlite),
    (b"-----BEGIN PGP MESSAGE-----", Format::Pgp),
    (b"{\\rtf", Format::Rtf),
    (b"QFI\xFB", Format::Qcow2),
    (b"\x7FELF", Format::Elf),
    (b"!<arch>\n", Format::Ar),
];

/// The kind of `head` (the first bytes of a file).
pub fn kind(head: &[u8]) -> Kind {
    if head.is_empty() {
        return Kind::Empty;
    }
    for (magic, format) in MAGICS {
        if head.starts_with(magic) {
            return Kind::Format(*format);
        }
    }
    if head.len() > 262 && &head[257..262] == b"ustar" {
        return Kind::Format(Format::Tar);
    }
    if is_pgp_binary(head) {
        return Kind::Format(Format::Pgp);
    }
    if is_text(head) {
        return Kind::Text;
    }
    Kind::Binary
}

/// An OpenPGP binary message, as gpg writes it: a public-key (tag 1) or symmetric (tag 3)
/// session key packet first, in old or new packet format, whose version byte is right.
fn is_pgp_binary(head: &[u8]) -> bool {
    let Some(&first) = head.first() else {
        return false;
    };
    let (tag, body) = if first & 0xC0 == 0xC0 {
        // new format: one-octet, two-octet or five-octet length
        let len_bytes = match head.get(1) {
            Some(0..=191) => 1,
            Some(192..=223) => 2,
            Some(255) => 5,
            _ => return false,
        };
        (first & 0x3F, 2 + len_bytes - 1)
    } else if first & 0x80 != 0 {
        let len_bytes = match first & 0x03 {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => return false,
        };
        ((first >> 2) & 0x0F, 1 + len_bytes)
    } else {
        return false;
    };
    matches!((tag, head.get(body)), (1, Some(3)) | (3, Some(4..=6)))
}

/// Whether `bytes` read as text: valid UTF-8 (a cut last character allowed) or a single-byte
/// encoding, and at most 2 % control bytes other than tab, newline, carriage return, form feed.
pub fn is_text(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    // counted in byte-wide counters a chunk at a time, branch-free: the compiler does many bytes
    // per instruction (one at a time, this was most of the judge's work on files programs make)
    let control = |b: u8| {
        u8::from(b < 0x20)
            & u8::from(b != b'\t')
            & u8::from(b != b'\n')
            & u8::from(b != b'\r')
            & u8::from(b != 0x0C)
            | u8::from(b == 0x7F)
    };
    let controls: usize = bytes
        .chunks(255)
        .map(|c| c.iter().fold(0u8, |n, &b| n + control(b)) as usize)
        .sum();
    if controls * 50 > bytes.len() {
        return false;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) if e.error_len().is_none() => true, // a multi-byte character cut at the end
        Err(_) => {
            // Latin-1 and friends: high bytes are letters, but not most of the text
            let high = bytes.iter().filter(|&&b| b >= 0x80).count();
            high * 4 < bytes.len()
        }
    }
}

/// Shannon entropy of `bytes`, in bits per byte (0 to 8).
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Entropy of a block that random bytes reach (a 4 KiB block of random bytes measures about
/// 7.95; compressed data about 7.8–7.97; text 4–5.5).
const DENSE: f64 = 7.5;
/// Entropy below which a block is clearly not random.
const SPARSE: f64 = 6.8;

/// Whether `text` is base64 (the alphabet, few spaces) whose decoded bytes look random: how
/// ciphertext is sometimes written to keep entropy low.
pub fn is_base64_of_random(text: &[u8]) -> bool {
    let sample = &text[..text.len().min(HEAD)];
    if sample.len() < 256 {
        return false;
    }
    // one pass, left at the first space or once more than 2 % is neither the alphabet nor a
    // line break: prose leaves within its first words (this ran over every file a program made)
    let allowed = sample.len() - sample.len() * 98 / 100;
    let mut other = 0;
    for &b in sample {
        if b == b' ' {
            return false;
        }
        let base64 = b.is_ascii_alphanumeric()
            || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'\n' | b'\r');
        if !base64 {
            other += 1;
            if other > allowed {
                return false;
            }
        }
    }
    let decoded = decode_base64(sample);
    decoded.len() >= 192 && entropy(&decoded) > DENSE - 0.3
}

fn decode_base64(text: &[u8]) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// What a change did to a document, judged from the heads of its old and new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still what it was (edited, saved again, rewritten in the same format).
    Edited,
    /// Turned into another known format (compressed, converted).
    Converted,
    /// Emptied, or overwritten with one repeated byte.
    Destroyed,
    /// Made unreadable: looks encrypted, or its format is gone without a new one.
    Encrypted,
}

/// Judges new content against the original. `old_len`/`new_len` are the whole files' sizes;
/// the heads are their first [`HEAD`] bytes.
pub fn judge(old: &[u8], old_len: u64, new: &[u8], new_len: u64) -> Verdict {
    if old_len > 0 && new_len == 0 {
        return Verdict::Destroyed;
    }
    if old.is_empty() {
        // nothing was there to lose
        return Verdict::Edited;
    }
    if is_one_repeated_byte(new) && !old.iter().all(|&b| b == old[0]) {
        return Verdict::Destroyed;
    }
    let (was, is) = (kind(old), kind(new));
    match (was, is) {
        // the same format again: its head may still be encrypted block by block
        (Kind::Format(a), Kind::Format(b)) if a == b => {
            if blocks_turned_random(old, new) && !a.is_dense() {
                Verdict::Encrypted
            } else {
                Verdict::Edited
            }
        }
        // a new known format that is not gpg: compressed or converted
        (_, Kind::Format(Format::Pgp)) => Verdict::Encrypted,
        (_, Kind::Format(_)) => Verdict::Converted,
        // a format gone, nothing known instead
        (Kind::Format(_), Kind::Text) => {
            if is_base64_of_random(new) {
                Verdict::Encrypted
            } else {
                // exported to text: converted
                Verdict::Converted
            }
        }
        (Kind::Format(_), _) => Verdict::Encrypted,
        (Kind::Text, Kind::Text) => {
            if is_base64_of_random(new) && !is_base64_of_random(old) {
                Verdict::Encrypted
            } else {
                Verdict::Edited
            }
        }
        // text that became bytes of no format: encrypted, bit-flipped, or destroyed
        (Kind::Text, Kind::Binary) => Verdict::Encrypted,
        (Kind::Binary, Kind::Binary) => {
            if blocks_turned_random(old, new) {
                Verdict::Encrypted
            } else {
                Verdict::Edited
            }
        }
        (_, Kind::Empty) => Verdict::Destroyed,
        _ => Verdict::Edited,
    }
}

/// Judges new content that replaced an original nothing is known of (renamed over a document
/// before the agent held it): from the new content alone — encrypted-looking bytes are
/// [`Verdict::Encrypted`], one repeated byte [`Verdict::Destroyed`], anything else (text, a
/// known format, ordinary bytes) a save.
pub fn judge_alone(new: &[u8]) -> Verdict {
    if is_one_repeated_byte(new) {
        Verdict::Destroyed
    } else if looks_encrypted(new) {
        Verdict::Encrypted
    } else {
        Verdict::Edited
    }
}

/// Whether `head` is at least 512 bytes of one repeated byte (a document overwritten with
/// zeroes, say).
fn is_one_repeated_byte(head: &[u8]) -> bool {
    head.len() >= 512 && head.iter().all(|&b| b == head[0])
}

/// Whether some block of the head that was not random before is random now (also what
/// intermittent encryption — the first 4 KiB, every 16th block — leaves).
fn blocks_turned_random(old: &[u8], new: &[u8]) -> bool {
    old.chunks(BLOCK)
        .zip(new.chunks(BLOCK))
        .filter(|(a, _)| a.len() >= 512)
        // the new block first: a changed block rarely turns dense, and then one entropy is enough
        .any(|(a, b)| a != b && entropy(b) > DENSE && entropy(a) < SPARSE)
}

/// Whether the content of a newly created file looks encrypted: dense bytes of no known
/// format, or a gpg message, or base64 of random bytes.
pub fn looks_encrypted(head: &[u8]) -> bool {
    looks_encrypted_as(kind(head), head)
}

/// [`looks_encrypted`] for a head whose kind is known already.
pub fn looks_encrypted_as(kind: Kind, head: &[u8]) -> bool {
    match kind {
        Kind::Format(Format::Pgp) => true,
        Kind::Format(_) | Kind::Empty => false,
        Kind::Text => is_base64_of_random(head),
        Kind::Binary => head.len() >= 256 && entropy(head) > DENSE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that look random (a simple generator: no dependency needed for tests).
    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn prose(n: usize) -> Vec<u8> {
        let words = "the quarterly report shows revenue growth in every region while costs \
                     stayed flat and the board approved the budget for next year ";
        words.bytes().cycle().take(n).collect()
    }

    fn base64(bytes: &[u8]) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        for (i, chunk) in bytes.chunks(3).enumerate() {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for k in 0..4 {
                out.push(A[((v >> (18 - 6 * k)) & 63) as usize]);
            }
            if i % 19 == 18 {
                out.push(b'\n');
            }
        }
        out
    }

    fn j(old: &[u8], new: &[u8]) -> Verdict {
        judge(old, old.len() as u64, new, new.len() as u64)
    }

    #[test]
    fn kinds_by_magic_and_text() {
        assert_eq!(kind(b"%PDF-1.7\n..."), Kind::Format(Format::Pdf));
        assert_eq!(kind(b"PK\x03\x04rest"), Kind::Format(Format::Zip));
        // a Debian package: its compressed members look random, the file is not "encrypted"
        let mut deb =
            b"!<arch>\ndebian-binary   1700000000  0     0     100644  4         `\n2.0\n".to_vec();
        deb.extend(random(8192, 7));
        assert_eq!(kind(&deb), Kind::Format(Format::Ar));
        assert!(!looks_encrypted(&deb));
        assert_eq!(kind(&prose(1000)), Kind::Text);
        assert_eq!(kind("Grüße aus Köln".as_bytes()), Kind::Text);
        assert_eq!(kind(&random(4096, 7)), Kind::Binary);
        assert_eq!(kind(b""), Kind::Empty);
        assert!(entropy(&random(65536, 3)) > 7.9);
        assert!(entropy(&prose(65536)) < 5.0);
    }

    #[test]
    fn encryption_in_every_disguise_is_seen() {
        let text = prose(20_000);
        // in-place ciphertext
        assert_eq!(j(&text, &random(20_000, 1)), Verdict::Encrypted);
        // XOR 0xFF keeps the entropy, loses the text
        let flipped: Vec<u8> = text.iter().map(|b| b ^ 0xFF).collect();
        assert!((entropy(&flipped) - entropy(&text)).abs() < 0.01);
        assert_eq!(j(&text, &flipped), Verdict::Encrypted);
        // base64 of ciphertext is text with lower entropy
        let b64 = base64(&random(15_000, 2));
        assert!(entropy(&b64) < 6.1);
        assert_eq!(j(&text, &b64), Verdict::Encrypted);
        // intermittent: the first 4 KiB only, or every 16th block
        let mut head_only = text.clone();
        head_only[..4096].copy_from_slice(&random(4096, 3));
        assert_eq!(j(&text, &head_only), Verdict::Encrypted);
        // a PDF whose header is gone
        let mut pdf = b"%PDF-1.7\n".to_vec();
        pdf.extend(prose(10_000));
        let mut broken = pdf.clone();
        broken[..4096].copy_from_slice(&random(4096, 4));
        assert_eq!(j(&pdf, &broken), Verdict::Encrypted);
        // a JPEG (dense already) bit-flipped
        let mut jpeg = b"\xFF\xD8\xFF\xE0".to_vec();
        jpeg.extend(random(10_000, 5));
        let flipped_jpeg: Vec<u8> = jpeg.iter().map(|b| b ^ 0xFF).collect();
        assert_eq!(j(&jpeg, &flipped_jpeg), Verdict::Encrypted);
        // gpg output in place of the document
        assert_eq!(
            j(&text, b"-----BEGIN PGP MESSAGE-----\n\nhQEMA..."),
            Verdict::Encrypted
        );
    }

    #[test]
    fn ordinary_changes_are_not_encryption() {
        let text = prose(20_000);
        let mut edited = text.clone();
        edited.extend_from_slice(b"\nOne more paragraph, written by a person.\n");
        assert_eq!(j(&text, &edited), Verdict::Edited);
        // gzip in place, zip, an image converted
        assert_eq!(
            j(&text, b"\x1F\x8B\x08\x00rest-of-gzip"),
            Verdict::Converted
        );
        assert_eq!(j(&text, b"PK\x03\x04zip"), Verdict::Converted);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(random(5000, 6));
        let mut jpg = b"\xFF\xD8\xFF\xE0".to_vec();
        jpg.extend(random(5000, 7));
        assert_eq!(j(&png, &jpg), Verdict::Converted);
        // an office document saved again (zip to zip, dense both times)
        let mut docx = b"PK\x03\x04".to_vec();
        docx.extend(random(8000, 8));
        let mut docx2 = b"PK\x03\x04".to_vec();
        docx2.extend(random(9000, 9));
        assert_eq!(j(&docx, &docx2), Verdict::Edited);
        // a SQLite database written
        let mut db = b"SQLite format 3\0".to_vec();
        db.extend(vec![0u8; 4000]);
        db.extend(prose(4000));
        let mut db2 = db.clone();
        db2[5000..5100].copy_from_slice(&prose(100));
        assert_eq!(j(&db, &db2), Verdict::Edited);
        // truncation and wiping
        assert_eq!(judge(&text, 20_000, b"", 0), Verdict::Destroyed);
        assert_eq!(j(&text, &vec![0u8; 20_000]), Verdict::Destroyed);
    }

    #[test]
    fn content_replacing_an_unknown_original_is_judged_alone() {
        assert_eq!(judge_alone(&prose(8192)), Verdict::Edited);
        assert_eq!(judge_alone(b"%PDF-1.4\nrevised"), Verdict::Edited);
        assert_eq!(judge_alone(b""), Verdict::Edited);
        assert_eq!(judge_alone(&random(8192, 21)), Verdict::Encrypted);
        assert_eq!(judge_alone(&base64(&random(8192, 22))), Verdict::Encrypted);
        assert_eq!(judge_alone(&[0u8; 4096]), Verdict::Destroyed);
    }

    #[test]
    fn new_files_that_look_encrypted() {
        assert!(looks_encrypted(&random(8192, 11)));
        assert!(looks_encrypted(&base64(&random(8192, 12))));
        assert!(!looks_encrypted(&prose(8192)));
        assert!(!looks_encrypted(b"\x1F\x8B\x08\x00gzip"));
    }
}
