//! Which files are documents: by extension, in families a policy names
//! (`ransomware.document_types`), and by content type for files whose name says nothing.

use rampart_protocol::policy::DocumentFamily;

use crate::content::{self, Format, Kind};

/// The extensions of each family (lower case, without the dot).
pub fn extensions(family: DocumentFamily) -> &'static [&'static str] {
    match family {
        DocumentFamily::Office => &[
            "doc", "docx", "docm", "dot", "dotx", "xls", "xlsx", "xlsm", "xlsb", "ppt", "pptx",
            "pptm", "odt", "ods", "odp", "odg", "rtf", "pages", "numbers", "key", "vsd", "vsdx",
            "pub", "one", "wpd", "wps",
        ],
        DocumentFamily::Pdf => &["pdf", "xps", "epub", "djvu"],
        DocumentFamily::Images => &[
            "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "heic", "raw", "cr2", "nef",
            "arw", "dng", "psd", "ai", "svg", "xcf", "ico",
        ],
        DocumentFamily::Text => &[
            "txt", "md", "csv", "tsv", "json", "xml", "yaml", "yml", "toml", "ini", "log", "tex",
            "html", "htm", "org", "rst",
        ],
        DocumentFamily::Source => &[
            "c", "h", "cc", "cpp", "hpp", "rs", "go", "py", "rb", "pl", "php", "java", "kt", "js",
            "ts", "jsx", "tsx", "cs", "swift", "scala", "sh", "sql", "lua", "r", "m",
        ],
        DocumentFamily::Archives => &[
            "zip", "7z", "rar", "tar", "gz", "tgz", "bz2", "xz", "zst", "iso",
        ],
        DocumentFamily::Databases => &[
            "db", "sqlite", "sqlite3", "mdb", "accdb", "dbf", "kdbx", "odb", "frm", "ibd",
        ],
        DocumentFamily::Mail => &["eml", "msg", "mbox", "pst", "ost", "vcf", "ics"],
        DocumentFamily::VirtualDisks => &["vmdk", "vdi", "vhd", "vhdx", "qcow2", "img"],
    }
}

/// The family content of `kind` belongs to, for files whose extension is not one of ours.
pub fn family_of_kind(kind: Kind) -> Option<DocumentFamily> {
    Some(match kind {
        Kind::Format(f) => match f {
            Format::Pdf => DocumentFamily::Pdf,
            Format::Zip | Format::Ole | Format::Rtf => DocumentFamily::Office,
            Format::Png | Format::Jpeg | Format::Gif | Format::Tiff | Format::Riff => {
                DocumentFamily::Images
            }
            Format::Gzip
            | Format::Zstd
            | Format::Xz
            | Format::Bzip2
            | Format::SevenZip
            | Format::Rar
            | Format::Tar
            | Format::Ar => DocumentFamily::Archives,
            Format::Sqlite => DocumentFamily::Databases,
            Format::Qcow2 => DocumentFamily::VirtualDisks,
            Format::Pgp | Format::Elf => return None,
        },
        _ => return None,
    })
}

/// Which files are protected documents.
#[derive(Debug, Clone)]
pub struct DocumentTypes {
    families: Vec<DocumentFamily>,
    extra: Vec<String>,
}

impl DocumentTypes {
    /// The families and extra extensions a policy names.
    pub fn new(families: &[DocumentFamily], extra: &[String]) -> DocumentTypes {
        DocumentTypes {
            families: families.to_vec(),
            extra: extra
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a file named `name` is a document by its extension.
    pub fn by_name(&self, name: &str) -> bool {
        let Some((_, ext)) = name.rsplit_once('.') else {
            return false;
        };
        let ext = ext.to_ascii_lowercase();
        self.extra.contains(&ext)
            || self
                .families
                .iter()
                .any(|f| extensions(*f).contains(&ext.as_str()))
    }

    /// Whether content with `head` is a document by its type (for names that say nothing).
    pub fn by_content(&self, head: &[u8]) -> bool {
        family_of_kind(content::kind(head)).is_some_and(|f| self.families.contains(&f))
    }

    /// Whether `name` is a known document extension of any family (a rename to something else
    /// is a rename to an unknown extension).
    pub fn is_known_extension(ext: &str) -> bool {
        let ext = ext.to_ascii_lowercase();
        DocumentFamily::ALL
            .iter()
            .any(|f| extensions(*f).contains(&ext.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_by_name_and_content() {
        let t = DocumentTypes::new(DocumentFamily::ALL, &[".Dwg".into()]);
        assert!(t.by_name("Report.DOCX"));
        assert!(t.by_name("notes.txt"));
        assert!(t.by_name("plan.dwg"));
        assert!(!t.by_name("libfoo.so"));
        assert!(!t.by_name("README"));
        assert!(t.by_content(b"%PDF-1.4"));
        assert!(!t.by_content(b"\x7FELF\x02"));
        let pdf_only = DocumentTypes::new(&[DocumentFamily::Pdf], &[]);
        assert!(!pdf_only.by_name("a.txt"));
        assert!(DocumentTypes::is_known_extension("JPG"));
        assert!(!DocumentTypes::is_known_extension("locked"));
    }
}
