//! `rampart-ransim corpus FOLDER --count N`: a tree of documents in real formats for the tests
//! and the benchmark — text, Markdown, CSV, JSON, HTML, XML, RTF, mail, source, PDF (with a
//! valid cross-reference table), Office Open XML and OpenDocument files (deflated ZIP
//! containers, as office suites write them), PNG images (zlib-compressed), gzip and ZIP
//! archives. The same count and seed always give the same tree.

use std::io::Write;
use std::path::Path;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

/// A small deterministic generator (xorshift64*), so a corpus can be made again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "shows",
    "revenue",
    "growth",
    "in",
    "every",
    "region",
    "while",
    "costs",
    "stayed",
    "flat",
    "customer",
    "orders",
    "shipped",
    "on",
    "time",
    "project",
    "milestone",
    "review",
    "meeting",
    "budget",
    "forecast",
    "invoice",
    "contract",
    "delivery",
    "schedule",
    "team",
    "north",
    "south",
    "east",
    "west",
    "product",
    "launch",
    "marketing",
    "sales",
    "support",
    "engineering",
    "design",
    "draft",
    "final",
    "approved",
    "pending",
    "and",
    "of",
    "to",
    "for",
    "with",
    "a",
    "is",
    "was",
    "will",
    "be",
    "our",
    "their",
    "new",
    "plan",
];

fn sentence(rng: &mut Rng) -> String {
    let n = 6 + rng.below(12) as usize;
    let mut s: Vec<&str> = (0..n)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    let first = s[0].to_owned();
    let mut cap = first[..1].to_uppercase();
    cap.push_str(&first[1..]);
    s[0] = "";
    format!("{cap}{}.", s.join(" "))
}

/// About `bytes` of prose.
fn prose(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 128);
    while out.len() < bytes {
        out.push_str(&sentence(rng));
        out.push(if rng.below(6) == 0 { '\n' } else { ' ' });
    }
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("deflating into memory");
    e.finish().expect("deflating into memory")
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// A ZIP archive of `entries` (name, content), deflated; an entry named `mimetype` is stored
/// as it is (OpenDocument asks for that, and `file(1)` reads the type from it).
fn zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, content) in entries {
        let stored = *name == "mimetype";
        let packed = if stored {
            content.clone()
        } else {
            deflate(content)
        };
        let method: u16 = if stored { 0 } else { 8 };
        let crc = crc32(content);
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes()); // made by
            }
            h.extend(20u16.to_le_bytes()); // needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(method.to_le_bytes()); // stored or deflated
            h.extend(0u16.to_le_bytes()); // time
            h.extend(0x5a21u16.to_le_bytes()); // date (2025-01-01)
            h.extend(crc.to_le_bytes());
            h.extend((packed.len() as u32).to_le_bytes());
            h.extend((content.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend(0u16.to_le_bytes()); // comment
                h.extend(0u16.to_le_bytes()); // disk
                h.extend(0u16.to_le_bytes()); // internal attributes
                h.extend(0u32.to_le_bytes()); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(&packed);
        central.extend(header(0x0201_4b50, true));
    }
    let at = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(at.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn docx(text: &str) -> Vec<u8> {
    let paragraphs: String = text
        .lines()
        .map(|l| format!("<w:p><w:r><w:t>{l}</w:t></w:r></w:p>"))
        .collect();
    zip(&[
        ("[Content_Types].xml", br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#.to_vec()),
        ("word/document.xml", format!(r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{paragraphs}</w:body></w:document>"#).into_bytes()),
    ])
}

fn xlsx(rng: &mut Rng, rows: usize) -> Vec<u8> {
    let data: String = (0..rows)
        .map(|r| {
            format!(
                r#"<row r="{n}"><c r="A{n}"><v>{}</v></c><c r="B{n}"><v>{}</v></c><c r="C{n}"><v>{}</v></c></row>"#,
                rng.below(100_000),
                rng.below(1000),
                rng.below(10),
                n = r + 1
            )
        })
        .collect();
    zip(&[
        ("[Content_Types].xml", br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_vec()),
        ("xl/worksheets/sheet1.xml", format!(r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{data}</sheetData></worksheet>"#).into_bytes()),
    ])
}

fn odt(text: &str) -> Vec<u8> {
    let paragraphs: String = text
        .lines()
        .map(|l| format!("<text:p>{l}</text:p>"))
        .collect();
    // the mimetype entry comes first, as OpenDocument asks (stored)
    zip(&[
        ("mimetype", b"application/vnd.oasis.opendocument.text".to_vec()),
        ("content.xml", format!(r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>{paragraphs}</office:text></office:body></office:document-content>"#).into_bytes()),
    ])
}

/// A PDF with one page of text and a correct cross-reference table.
fn pdf(text: &str) -> Vec<u8> {
    let lines: String = text
        .lines()
        .take(200)
        .map(|l| {
            let l: String = l
                .chars()
                .filter(|c| !matches!(c, '(' | ')' | '\\'))
                .collect();
            format!("({l}) Tj T*\n")
        })
        .collect();
    let stream = format!("BT /F1 10 Tf 12 TL 40 800 Td\n{lines}ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}endstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut both = kind.to_vec();
    both.extend(data);
    out.extend(&both);
    out.extend(crc32(&both).to_be_bytes());
}

/// An RGB image with gradients and noise (a photo compresses about as badly).
fn png(rng: &mut Rng, width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            let noise = (rng.next() & 0x1f) as u32;
            raw.push(((x * 255 / width) + noise).min(255) as u8);
            raw.push(((y * 255 / height) + noise).min(255) as u8);
            raw.push((((x + y) * 128 / (width + height)) + noise).min(255) as u8);
        }
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw).expect("compressing into memory");
    let idat = z.finish().expect("compressing into memory");
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &idat);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("compressing into memory");
    e.finish().expect("compressing into memory")
}

fn csv(rng: &mut Rng, rows: usize) -> String {
    let mut s = String::from("id,region,units,amount,date\n");
    for r in 0..rows {
        s.push_str(&format!(
            "{r},{},{},{}.{:02},2026-{:02}-{:02}\n",
            ["north", "south", "east", "west"][rng.below(4) as usize],
            rng.below(500),
            rng.below(100_000),
            rng.below(100),
            1 + rng.below(12),
            1 + rng.below(28)
        ));
    }
    s
}

/// One document of kind `k` (a rotation over the formats), about `size` bytes of content.
fn document(rng: &mut Rng, k: usize, size: usize) -> (&'static str, Vec<u8>) {
    let text = prose(rng, size);
    match k % 17 {
        0 => ("txt", text.into_bytes()),
        1 => ("md", format!("# {}\n\n{text}", sentence(rng)).into_bytes()),
        2 => ("csv", csv(rng, size / 40).into_bytes()),
        3 => (
            "json",
            format!(
                "{{\"title\": \"{}\", \"items\": [{}]}}\n",
                sentence(rng),
                (0..size / 60)
                    .map(|i| format!("{{\"id\": {i}, \"value\": {}}}", rng.below(10_000)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into_bytes(),
        ),
        4 => (
            "html",
            format!("<!DOCTYPE html>\n<html><head><title>{}</title></head><body><p>{}</p></body></html>\n", sentence(rng), text.replace('\n', "</p>\n<p>")).into_bytes(),
        ),
        5 => ("xml", format!("<?xml version=\"1.0\"?>\n<notes>{}</notes>\n", text.lines().map(|l| format!("<note>{l}</note>\n")).collect::<String>()).into_bytes()),
        6 => ("rtf", format!("{{\\rtf1\\ansi\\deff0 {{\\fonttbl {{\\f0 Times;}}}}\\f0\\fs24 {}}}\n", text.replace('\n', "\\par\n")).into_bytes()),
        7 => ("eml", format!("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: {}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n", sentence(rng), text.replace('\n', "\r\n")).into_bytes()),
        8 => ("rs", format!("//! {}\n\n{}", sentence(rng), (0..size / 80).map(|i| format!("pub fn item_{i}(x: u64) -> u64 {{\n    x.wrapping_mul({}) ^ {}\n}}\n\n", rng.below(1000), rng.below(1000))).collect::<String>()).into_bytes()),
        9 => ("py", format!("\"\"\"{}\"\"\"\n\n{}", sentence(rng), (0..size / 70).map(|i| format!("def item_{i}(x):\n    return x * {} + {}\n\n", rng.below(1000), rng.below(1000))).collect::<String>()).into_bytes()),
        10 => ("pdf", pdf(&text)),
        11 => ("docx", docx(&text)),
        12 => ("xlsx", xlsx(rng, size / 30)),
        13 => ("odt", odt(&text)),
        14 => {
            let side = ((size / 3) as f64).sqrt().max(16.0) as u32;
            ("png", png(rng, side, side))
        }
        15 => ("gz", gzip(text.as_bytes())),
        _ => ("zip", zip(&[("notes.txt", text.into_bytes()), ("data.csv", csv(rng, size / 40).into_bytes())])),
    }
}

/// Writes `count` documents below `dir`, in folders of about 40 (two levels), sizes from 1 to
/// 128 KiB (most small, as on a real disk).
pub fn make(dir: &Path, count: usize, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng(seed.max(1));
    const TOPS: &[&str] = &["Documents", "Projects", "Finance", "Photos", "Mail", "Code"];
    for i in 0..count {
        let top = TOPS[i % TOPS.len()];
        let folder = dir
            .join(top)
            .join(format!("{top}-{:02}", (i / TOPS.len()) / 40));
        std::fs::create_dir_all(&folder)?;
        // sizes: 1 KiB to 128 KiB, skewed small
        let size = 1024usize << rng.below(8);
        let size = size + rng.below(size as u64) as usize / 2;
        let (ext, data) = document(&mut rng, i, size);
        std::fs::write(
            folder.join(format!("{}-{i:05}.{ext}", top.to_lowercase())),
            data,
        )?;
    }
    Ok(())
}
