//! Incremental reading of an XML stream (RFC 6120 section 4) into stanzas.
//!
//! [`StreamReader::next`] returns the stream header first, then one top-level child of
//! `<stream:stream>` at a time, then [`StreamEvent::Closed`]. Input outside the XMPP
//! subset of XML, or over the [`Limits`], ends the stream with the stream error
//! condition RFC 6120 sections 4.9.3 and 11 name; the reader then keeps returning that
//! error.
//!
//! `next` is not cancel-safe (quick-xml does not document its read futures as such):
//! drive it to completion, from a task of its own, and keep it out of `select!`. A
//! reader whose `next` future was dropped mid-read refuses further use rather than
//! return a misparsed stanza.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use quick_xml::errors::{Error as XmlError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use tokio::io::AsyncRead;

use super::on_demand::OnDemandBuf;

use super::chars::{
    is_all_space, is_xml_char, is_xml_space, resolve_reference, split_qname, BadReference,
};
use super::element::Element;
use super::error::{stream_error_xml, StreamErrorKind};
use super::metered::Metered;
use super::ns;

/// Bounds on what one peer can make the server hold in memory.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of one stanza, from its `<` to the end of its closing tag. Also bounds the
    /// stream header and any whitespace between stanzas.
    pub max_stanza_bytes: usize,
    /// Nesting inside a stanza; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attrs: 64,
        }
    }
}

/// The attributes of the peer's `<stream:stream>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// The default namespace declared on the stream element, which stanzas inherit:
    /// `jabber:client` or `jabber:server` on a valid stream. Empty if none was declared.
    /// The reader does not judge it; the caller knows which one it expects and answers
    /// a wrong one with `invalid-namespace` (RFC 6120 section 4.8.2).
    pub default_ns: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Header(StreamHeader),
    /// A top-level child of the stream: a stanza, or a stream-level element such as
    /// `<starttls/>`, `<auth/>` or `<stream:features/>`.
    Stanza(Element),
    /// `</stream:stream>`. Further calls keep returning it; nothing after it is read.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the stream failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection without `</stream:stream>`.
    #[error("the peer closed the connection without closing the stream")]
    Eof,
    /// The input broke a rule of the protocol; send this stream error and close.
    #[error("stream error {kind}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    Stream {
        kind: StreamErrorKind,
        text: Option<String>,
    },
}

impl ReadError {
    /// The `<stream:error/>` to send the peer before closing, if this error calls for
    /// one (I/O failures and a vanished peer do not).
    pub fn stream_error_xml(&self) -> Option<String> {
        match self {
            ReadError::Stream { kind, text } => Some(stream_error_xml(*kind, text.as_deref())),
            ReadError::Io(_) | ReadError::Eof => None,
        }
    }

    /// The stream error condition, if this is a stream error.
    pub fn stream_error_kind(&self) -> Option<StreamErrorKind> {
        match self {
            ReadError::Stream { kind, .. } => Some(*kind),
            ReadError::Io(_) | ReadError::Eof => None,
        }
    }

    fn stream(kind: StreamErrorKind, text: impl Into<String>) -> ReadError {
        ReadError::Stream {
            kind,
            text: Some(text.into()),
        }
    }

    /// A copy for replaying from a failed reader (`io::Error` is not `Clone`).
    fn replay(&self) -> ReadError {
        match self {
            ReadError::Io(e) => ReadError::Io(io::Error::new(e.kind(), e.to_string())),
            ReadError::Eof => ReadError::Eof,
            ReadError::Stream { kind, text } => ReadError::Stream {
                kind: *kind,
                text: text.clone(),
            },
        }
    }
}

fn not_well_formed(text: &str) -> ReadError {
    ReadError::stream(StreamErrorKind::NotWellFormed, text)
}

fn restricted(text: &str) -> ReadError {
    ReadError::stream(StreamErrorKind::RestrictedXml, text)
}

fn policy(text: impl Into<String>) -> ReadError {
    ReadError::stream(StreamErrorKind::PolicyViolation, text)
}

enum State {
    Open,
    /// The root was an empty element: the header has been returned, `Closed` is next.
    Closing,
    Closed,
    Failed(ReadError),
}

/// Reads an XMPP stream from `R`, one event per call to [`StreamReader::next`].
pub struct StreamReader<R> {
    xml: Reader<OnDemandBuf<Metered<R>>>,
    /// quick-xml's event buffer, reused between events.
    buf: Vec<u8>,
    limits: Limits,
    doc: Doc,
    state: State,
    /// Set while a `next` future is in progress; still set on entry means the previous
    /// future was dropped mid-read and the parser state can no longer be trusted.
    in_flight: bool,
}

/// Keep the event buffer from pinning a maximal stanza's worth of memory on every idle
/// connection.
const BUF_KEEP: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> StreamReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        Self::with_doc(inner, limits, Doc::default())
    }

    fn with_doc(inner: R, limits: Limits, doc: Doc) -> Self {
        let cap = limits.max_stanza_bytes as u64;
        // Read through a buffer held only while bytes wait to be parsed: most
        // connections are idle most of the time (`on_demand`).
        let xml = Reader::from_reader(OnDemandBuf::new(Metered::new(inner, cap)));
        StreamReader {
            xml,
            buf: Vec::new(),
            limits,
            doc,
            state: State::Open,
            in_flight: false,
        }
    }

    /// The next header, stanza or close; see the module documentation.
    pub async fn next(&mut self) -> Result<StreamEvent, ReadError> {
        match &self.state {
            State::Open => {}
            State::Closing => {
                self.state = State::Closed;
                return Ok(StreamEvent::Closed);
            }
            State::Closed => return Ok(StreamEvent::Closed),
            State::Failed(e) => return Err(e.replay()),
        }
        if self.in_flight {
            let e = ReadError::stream(
                StreamErrorKind::InternalServerError,
                "a read was abandoned half-way; the stream cannot be resumed",
            );
            self.state = State::Failed(e.replay());
            return Err(e);
        }
        self.in_flight = true;
        let result = self.read_event().await;
        self.in_flight = false;
        match &result {
            Ok(StreamEvent::Header(_)) if self.doc.root_closed => self.state = State::Closing,
            Ok(StreamEvent::Closed) => self.state = State::Closed,
            Ok(_) => {}
            Err(e) => self.state = State::Failed(e.replay()),
        }
        result
    }

    /// Bytes read from the inner reader that the parser has not consumed yet. After the
    /// element that ends a plaintext phase (`<starttls/>`, SASL success) this must be
    /// zero: anything else was sent before the TLS handshake and could be an injection.
    pub fn buffered_len(&self) -> usize {
        self.xml.get_ref().buffer().len()
    }

    pub fn get_ref(&self) -> &R {
        self.xml.get_ref().get_ref().get_ref()
    }

    /// Bytes pulled from the inner reader so far (what a rate shaper charges).
    pub fn bytes_read(&self) -> u64 {
        self.xml.get_ref().get_ref().pulled()
    }

    /// The inner reader. Buffered bytes (see [`Self::buffered_len`]) are dropped.
    pub fn into_inner(self) -> R {
        self.xml.into_inner().into_inner().into_inner()
    }

    async fn read_event(&mut self) -> Result<StreamEvent, ReadError> {
        loop {
            if self.doc.scopes.len() <= 1 {
                // Between stanzas: start the budget for the next one at the parser's
                // position, so it counts exactly the stanza's own bytes.
                self.renew_budget();
                if self.buf.capacity() > BUF_KEEP {
                    self.buf = Vec::new();
                }
            }
            self.buf.clear();
            let event = match self.xml.read_event_into_async(&mut self.buf).await {
                Ok(event) => event,
                Err(e) => return Err(map_xml_error(&self.xml, &self.limits, &self.doc, e)),
            };
            let first = !self.doc.started;
            self.doc.started = true;
            let done = match event {
                Event::Decl(decl) if first => {
                    check_decl(&decl)?;
                    None
                }
                Event::Decl(_) | Event::PI(_) => {
                    return Err(restricted(
                        "processing instructions are not allowed (RFC 6120 section 11.1)",
                    ))
                }
                Event::Comment(_) => {
                    return Err(restricted(
                        "comments are not allowed (RFC 6120 section 11.1)",
                    ))
                }
                Event::DocType(_) => {
                    return Err(restricted(
                        "document type declarations are not allowed (RFC 6120 section 11.1)",
                    ))
                }
                Event::Start(start) => self.doc.start(&start, false, &self.limits)?,
                Event::Empty(start) => self.doc.start(&start, true, &self.limits)?,
                Event::End(_) => self.doc.end()?,
                Event::Text(text) => {
                    self.doc.text(&text, true)?;
                    None
                }
                Event::CData(text) => {
                    self.doc.text(&text, false)?;
                    None
                }
                Event::GeneralRef(reference) => {
                    self.doc.reference(&reference)?;
                    None
                }
                Event::Eof => return Err(ReadError::Eof),
            };
            if let Some(event) = done {
                return Ok(event);
            }
        }
    }

    fn renew_budget(&mut self) {
        let bufreader = self.xml.get_mut();
        let buffered = bufreader.buffer().len() as u64;
        let metered = bufreader.get_mut();
        let consumed = metered.pulled().saturating_sub(buffered);
        metered.set_cap(consumed.saturating_add(self.limits.max_stanza_bytes as u64));
    }
}

fn map_xml_error<R: AsyncRead + Unpin>(
    xml: &Reader<OnDemandBuf<Metered<R>>>,
    limits: &Limits,
    doc: &Doc,
    e: XmlError,
) -> ReadError {
    let bufreader = xml.get_ref();
    let metered = bufreader.get_ref();
    if metered.tripped() {
        return policy(format!(
            "stanza larger than {} bytes",
            limits.max_stanza_bytes
        ));
    }
    // quick-xml reports a construct cut short by end of input as a syntax error; when
    // the peer simply went away, say so instead.
    let truncated = matches!(
        e,
        XmlError::Syntax(_) | XmlError::IllFormed(IllFormedError::UnclosedReference)
    );
    if truncated && metered.eof() && bufreader.buffer().is_empty() {
        return ReadError::Eof;
    }
    match e {
        XmlError::Io(io) => ReadError::Io(
            std::sync::Arc::try_unwrap(io)
                .unwrap_or_else(|io| io::Error::new(io.kind(), io.to_string())),
        ),
        // `<!` followed by anything but `--`, `[CDATA[` or `DOCTYPE`: the markup
        // declarations (ENTITY, ELEMENT, ATTLIST, NOTATION) RFC 6120 section 11.1 bans.
        XmlError::Syntax(SyntaxError::InvalidBangMarkup)
        | XmlError::IllFormed(IllFormedError::MissingDoctypeName) => {
            restricted("markup declarations are not allowed (RFC 6120 section 11.1)")
        }
        XmlError::Encoding(_) if !doc.header_seen => ReadError::stream(
            StreamErrorKind::UnsupportedEncoding,
            "streams must be encoded in UTF-8 (RFC 6120 section 11.6)",
        ),
        XmlError::Encoding(_) => not_well_formed("invalid UTF-8"),
        XmlError::IllFormed(
            IllFormedError::MismatchedEndTag { .. } | IllFormedError::UnmatchedEndTag(_),
        ) => not_well_formed("closing tag does not match the open element"),
        XmlError::IllFormed(IllFormedError::UnclosedReference) => {
            not_well_formed("'&' must start a reference ending in ';'")
        }
        XmlError::Syntax(_) => not_well_formed("malformed markup"),
        _ => not_well_formed("malformed XML"),
    }
}

/// The XML declaration: only `version` (1.x), `encoding` (UTF-8) and `standalone`, in
/// that order.
fn check_decl(decl: &str) -> Result<(), ReadError> {
    let bad = || not_well_formed("malformed XML declaration");
    let body = decl.strip_prefix("xml").ok_or_else(bad)?;
    let attrs = parse_attrs(body, 3).map_err(|_| bad())?;
    let mut expected = ["version", "encoding", "standalone"].iter();
    for (i, (name, value)) in attrs.iter().enumerate() {
        if !expected.any(|e| e == name) || (i == 0 && *name != "version") {
            return Err(bad());
        }
        let ok = match *name {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
            "encoding" if value.eq_ignore_ascii_case("utf-8") => true,
            "encoding" => {
                return Err(ReadError::stream(
                    StreamErrorKind::UnsupportedEncoding,
                    "streams must be encoded in UTF-8 (RFC 6120 section 11.6)",
                ))
            }
            _ => *value == "yes" || *value == "no",
        };
        if !ok {
            return Err(bad());
        }
    }
    if attrs.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// Splits the attribute part of a start tag (everything after the name) into
/// `(qualified name, raw value)` pairs, checking the XML syntax strictly: whitespace
/// between attributes, `=`, quoted values, valid names, no duplicate names.
///
/// Stops with a policy violation as soon as there are more than `max` attributes.
fn parse_attrs(raw: &str, max: usize) -> Result<Vec<(&str, &str)>, ReadError> {
    let bytes = raw.as_bytes();
    let space = |i: usize| matches!(bytes.get(i), Some(b' ' | b'\t' | b'\r' | b'\n'));
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    let mut i = 0;
    loop {
        let gap = i;
        while space(i) {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        if i == gap {
            return Err(not_well_formed(
                "attributes must be separated by whitespace",
            ));
        }
        let name_start = i;
        while i < bytes.len() && !space(i) && bytes[i] != b'=' {
            i += 1;
        }
        let name = &raw[name_start..i];
        if split_qname(name).is_none() {
            return Err(not_well_formed("invalid attribute name"));
        }
        while space(i) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err(not_well_formed("attribute without '='"));
        }
        i += 1;
        while space(i) {
            i += 1;
        }
        let quote = match bytes.get(i) {
            Some(q @ (b'"' | b'\'')) => *q,
            _ => return Err(not_well_formed("attribute value must be quoted")),
        };
        i += 1;
        let value_len = bytes[i..]
            .iter()
            .position(|b| *b == quote)
            .ok_or_else(|| not_well_formed("unterminated attribute value"))?;
        let value = &raw[i..i + value_len];
        i += value_len + 1;
        if attrs.len() == max {
            return Err(policy(format!("more than {max} attributes on one element")));
        }
        attrs.push((name, value));
    }
    let mut names: Vec<&str> = attrs.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(not_well_formed("duplicate attribute"));
    }
    Ok(attrs)
}

/// Resolves references in an attribute value and applies attribute-value normalization
/// (XML 1.0 section 3.3.3: literal tab, CR, LF and CRLF each become one space).
fn attr_value(raw: &str) -> Result<String, ReadError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '<' => return Err(not_well_formed("'<' in an attribute value")),
            '&' => {
                // A reference body holds name characters and '#' only; stopping at the
                // first other character keeps a value full of '&' linear to scan.
                let end = rest
                    .find(|c: char| {
                        c == ';' || c == '&' || c == '<' || is_xml_space(c) || c == '"' || c == '\''
                    })
                    .filter(|&end| rest.as_bytes()[end] == b';')
                    .ok_or_else(|| not_well_formed("'&' must start a reference ending in ';'"))?;
                out.push(resolve(&rest[..end])?);
                rest = &rest[end + 1..];
            }
            '\r' => {
                rest = rest.strip_prefix('\n').unwrap_or(rest);
                out.push(' ');
            }
            '\t' | '\n' => out.push(' '),
            c if is_xml_char(c) => out.push(c),
            _ => return Err(not_well_formed("character not allowed in XML")),
        }
    }
    Ok(out)
}

fn resolve(body: &str) -> Result<char, ReadError> {
    resolve_reference(body).map_err(|e| match e {
        BadReference::Undeclared => restricted(
            "only the five predefined entities may be referenced (RFC 6120 section 11.1)",
        ),
        BadReference::Malformed => not_well_formed("invalid character or entity reference"),
    })
}

/// Checks character data and applies end-of-line handling (XML 1.0 section 2.11).
fn char_data(raw: &str, is_text: bool) -> Result<String, ReadError> {
    if !raw.chars().all(is_xml_char) {
        return Err(not_well_formed("character not allowed in XML"));
    }
    if is_text && raw.contains("]]>") {
        return Err(not_well_formed("']]>' is not allowed in text"));
    }
    if raw.contains('\r') {
        Ok(raw.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Ok(raw.to_owned())
    }
}

/// Declarations in scope at once. Name resolution scans them, so this bounds the work
/// per element; real streams declare a handful (quick-xml's own default is 128 too).
const MAX_NAMESPACE_BINDINGS: usize = 128;

struct Binding {
    /// `None` for the default namespace.
    prefix: Option<String>,
    uri: String,
}

/// Namespace scopes and the stanza under construction.
#[derive(Default)]
struct Doc {
    /// Any event has been seen (an XML declaration is only allowed first).
    started: bool,
    header_seen: bool,
    /// The stream root was an empty element.
    root_closed: bool,
    /// In-scope namespace declarations, innermost last.
    bindings: Vec<Binding>,
    /// For each open element, root first: `bindings.len()` before its declarations.
    scopes: Vec<usize>,
    /// The open elements of the stanza being read, the stanza itself first.
    open: Vec<Element>,
}

impl Doc {
    /// A document already inside a nameless root with no namespace declarations, for
    /// parsing one element on its own.
    fn fragment() -> Doc {
        Doc {
            header_seen: true,
            scopes: vec![0],
            ..Doc::default()
        }
    }

    fn default_ns(&self) -> &str {
        self.bindings
            .iter()
            .rev()
            .find(|b| b.prefix.is_none())
            .map_or("", |b| b.uri.as_str())
    }

    fn lookup(&self, prefix: &str) -> Result<String, ReadError> {
        match prefix {
            "xml" => Ok(ns::XML.to_owned()),
            "xmlns" => Err(not_well_formed("the xmlns prefix cannot qualify a name")),
            _ => self
                .bindings
                .iter()
                .rev()
                .find(|b| b.prefix.as_deref() == Some(prefix))
                .map(|b| b.uri.clone())
                .ok_or_else(|| {
                    ReadError::stream(
                        StreamErrorKind::BadNamespacePrefix,
                        "undeclared namespace prefix",
                    )
                }),
        }
    }

    fn bind(&mut self, prefix: Option<&str>, uri: String) -> Result<(), ReadError> {
        if self.bindings.len() >= MAX_NAMESPACE_BINDINGS {
            return Err(policy(format!(
                "more than {MAX_NAMESPACE_BINDINGS} namespace declarations in scope"
            )));
        }
        self.bindings.push(Binding {
            prefix: prefix.map(str::to_owned),
            uri,
        });
        Ok(())
    }

    fn start(
        &mut self,
        tag: &BytesStart<'_>,
        empty: bool,
        limits: &Limits,
    ) -> Result<Option<StreamEvent>, ReadError> {
        let depth = self.scopes.len();
        if depth > limits.max_depth {
            return Err(policy(format!(
                "elements nested more than {} deep",
                limits.max_depth
            )));
        }
        let qname = tag.name();
        let (prefix, local) =
            split_qname(qname.as_ref()).ok_or_else(|| not_well_formed("invalid element name"))?;
        let raw_attrs = parse_attrs(tag.attributes_raw(), limits.max_attrs)?;

        let mark = self.bindings.len();
        self.scopes.push(mark);
        let mut attrs = Vec::with_capacity(raw_attrs.len());
        for (name, raw) in &raw_attrs {
            let value = attr_value(raw)?;
            if *name == "xmlns" {
                if value == ns::XML || value == ns::XMLNS {
                    return Err(not_well_formed("reserved namespace as default namespace"));
                }
                self.bind(None, value)?;
            } else if let Some(declared) = name.strip_prefix("xmlns:") {
                let reserved = value == ns::XML || value == ns::XMLNS;
                match declared {
                    "xml" if value == ns::XML => {}
                    "xml" | "xmlns" => {
                        return Err(not_well_formed("reserved prefix cannot be redeclared"))
                    }
                    _ if reserved || value.is_empty() => {
                        return Err(not_well_formed("invalid namespace declaration"))
                    }
                    _ => self.bind(Some(declared), value)?,
                }
            } else {
                attrs.push((*name, value));
            }
        }

        let ns = match prefix {
            None => self.default_ns().to_owned(),
            // Legal XML, but an element in the XML namespace has no meaning in XMPP and
            // no default-namespace form to be written back out with.
            Some("xml") => {
                return Err(ReadError::stream(
                    StreamErrorKind::BadNamespacePrefix,
                    "elements cannot be in the XML namespace",
                ))
            }
            Some(p) => self.lookup(p)?,
        };
        let mut resolved = Vec::with_capacity(attrs.len());
        for (name, value) in attrs {
            let key = match split_qname(name) {
                Some((Some("xml"), local)) => format!("xml:{local}"),
                Some((Some(p), local)) => format!("{{{}}}{local}", self.lookup(p)?),
                _ => name.to_owned(),
            };
            resolved.push((key, value));
        }
        // Distinct qualified names can still be one expanded name when two prefixes
        // are bound to the same namespace.
        let mut keys: Vec<&str> = resolved.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(not_well_formed("duplicate attribute"));
        }
        let element = Element::from_parts(local, ns, resolved);

        if depth == 0 {
            return self.root(element, empty).map(Some);
        }
        if empty {
            return Ok(self.close(element));
        }
        self.open.push(element);
        Ok(None)
    }

    fn root(&mut self, root: Element, empty: bool) -> Result<StreamEvent, ReadError> {
        if root.ns() != ns::STREAM {
            return Err(ReadError::stream(
                StreamErrorKind::InvalidNamespace,
                "the stream element must be qualified by http://etherx.jabber.org/streams",
            ));
        }
        if root.name() != "stream" {
            return Err(ReadError::stream(
                StreamErrorKind::BadFormat,
                "the root element must be <stream:stream>",
            ));
        }
        let attr = |name: &str| root.attr(name).map(str::to_owned);
        let header = StreamHeader {
            to: attr("to"),
            from: attr("from"),
            id: attr("id"),
            version: attr("version"),
            lang: attr("xml:lang"),
            default_ns: self.default_ns().to_owned(),
        };
        self.header_seen = true;
        self.root_closed = empty;
        Ok(StreamEvent::Header(header))
    }

    /// Closes the innermost open element (or an empty one, `element`), returning the
    /// stanza if it was top-level.
    fn close(&mut self, element: Element) -> Option<StreamEvent> {
        if let Some(mark) = self.scopes.pop() {
            self.bindings.truncate(mark);
        }
        match self.open.last_mut() {
            Some(parent) => {
                parent.append_child(element);
                None
            }
            None => {
                // Between stanzas nothing is open: the stack's room goes, rather than
                // staying with every idle stream.
                self.open = Vec::new();
                Some(StreamEvent::Stanza(element))
            }
        }
    }

    fn end(&mut self) -> Result<Option<StreamEvent>, ReadError> {
        match self.scopes.len() {
            // quick-xml has already matched the end tag against an open start tag.
            0 => Err(not_well_formed("closing tag without an open element")),
            1 => {
                self.scopes.clear();
                self.bindings.clear();
                Ok(Some(StreamEvent::Closed))
            }
            _ => match self.open.pop() {
                Some(element) => Ok(self.close(element)),
                None => Err(not_well_formed("closing tag without an open element")),
            },
        }
    }

    fn text(&mut self, raw: &str, is_text: bool) -> Result<(), ReadError> {
        match self.open.last_mut() {
            Some(parent) => {
                let text = char_data(raw, is_text)?;
                parent.append_text(text);
                Ok(())
            }
            None if is_all_space(raw) => Ok(()),
            None if self.scopes.is_empty() => {
                Err(not_well_formed("text outside the stream element"))
            }
            None => Err(ReadError::stream(
                StreamErrorKind::BadFormat,
                "text between stanzas may only be whitespace",
            )),
        }
    }

    fn reference(&mut self, body: &str) -> Result<(), ReadError> {
        let c = resolve(body)?;
        match self.open.last_mut() {
            Some(parent) => {
                parent.append_char(c);
                Ok(())
            }
            None if self.scopes.is_empty() => {
                Err(not_well_formed("reference outside the stream element"))
            }
            None if is_xml_space(c) => Ok(()),
            None => Err(ReadError::stream(
                StreamErrorKind::BadFormat,
                "text between stanzas may only be whitespace",
            )),
        }
    }
}

/// Parses one element (with optional XML declaration and surrounding whitespace) from a
/// string, under `limits` and the same rules as a stanza on a stream. The element's
/// default namespace is empty unless it declares one.
pub fn parse_element(xml: &str, limits: &Limits) -> Result<Element, ReadError> {
    let mut reader = StreamReader::with_doc(xml.as_bytes(), limits.clone(), Doc::fragment());
    let element = match now_or_never(reader.next())? {
        StreamEvent::Stanza(element) => element,
        StreamEvent::Header(_) | StreamEvent::Closed => {
            return Err(not_well_formed("not an element"))
        }
    };
    match now_or_never(reader.next()) {
        Err(ReadError::Eof) => Ok(element),
        Err(e) => Err(e),
        Ok(_) => Err(not_well_formed("more than one element")),
    }
}

impl Element {
    /// Parses a standalone element, e.g. one written by [`Element::to_xml`] into
    /// storage. No size limit; depth up to 256 (the recursive tree operations stay far
    /// from the stack's end); any number of attributes.
    pub fn from_xml(xml: &str) -> Result<Element, ReadError> {
        parse_element(
            xml,
            &Limits {
                max_stanza_bytes: usize::MAX,
                max_depth: 256,
                max_attrs: usize::MAX,
            },
        )
    }
}

/// Runs a future over an in-memory reader, which never has to wait.
fn now_or_never<F: Future<Output = Result<StreamEvent, ReadError>>>(
    future: F,
) -> Result<StreamEvent, ReadError> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => Err(ReadError::Io(io::ErrorKind::WouldBlock.into())),
    }
}

/// The opening of our side of a stream: XML declaration and `<stream:stream>` with the
/// given attributes, declaring `default_ns` and the `stream` prefix that
/// [`stream_error_xml`] relies on.
pub fn stream_header_xml(header: &StreamHeader) -> String {
    use super::chars::escape_attr;
    let mut out = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}'",
        escape_attr(&header.default_ns),
        ns::STREAM
    );
    for (name, value) in [
        ("from", &header.from),
        ("to", &header.to),
        ("id", &header.id),
        ("version", &header.version),
        ("xml:lang", &header.lang),
    ] {
        if let Some(value) = value {
            out.push_str(&format!(" {name}='{}'", escape_attr(value)));
        }
    }
    out.push('>');
    out
}

/// Closes our side of a stream.
pub const STREAM_CLOSE: &str = "</stream:stream>";
