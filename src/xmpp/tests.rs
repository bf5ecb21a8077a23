//! Behaviour of the stream reader, fed the way a socket feeds it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::stream::{parse_element, stream_header_xml, STREAM_CLOSE};
use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

/// Hands out `chunk` bytes per read and is `Pending` every other poll, as a socket is.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    stall: bool,
}

impl Chunked {
    fn new(data: impl Into<Vec<u8>>, chunk: usize) -> Self {
        Chunked {
            data: data.into(),
            pos: 0,
            chunk,
            stall: false,
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.stall = !this.stall;
        if this.stall {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = this
            .chunk
            .min(this.data.len() - this.pos)
            .min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// `prefix`, then `pattern` repeated up to `total` bytes, without ever holding them:
/// shows how much a peer can make the reader pull.
struct Generator {
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    total: u64,
    pulled: u64,
}

impl Generator {
    fn new(prefix: &str, pattern: &str, total: u64) -> Self {
        Generator {
            prefix: prefix.as_bytes().to_vec(),
            pattern: pattern.as_bytes().to_vec(),
            total,
            pulled: 0,
        }
    }
}

impl AsyncRead for Generator {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while buf.remaining() > 0 && this.pulled < this.total {
            let at = this.pulled as usize;
            let byte = match this.prefix.get(at) {
                Some(b) => *b,
                None => this.pattern[(at - this.prefix.len()) % this.pattern.len()],
            };
            buf.put_slice(&[byte]);
            this.pulled += 1;
        }
        Poll::Ready(Ok(()))
    }
}

/// Every event until `Closed` or an error.
async fn read_all(
    input: &str,
    chunk: usize,
    limits: Limits,
) -> (Vec<StreamEvent>, Option<ReadError>) {
    let mut reader = StreamReader::new(Chunked::new(input, chunk), limits);
    let mut events = Vec::new();
    loop {
        match reader.next().await {
            Ok(StreamEvent::Closed) => {
                events.push(StreamEvent::Closed);
                return (events, None);
            }
            Ok(event) => events.push(event),
            Err(e) => return (events, Some(e)),
        }
    }
}

fn stanzas(events: &[StreamEvent]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The condition a stream of `HEADER` followed by `stanzas` ends with.
async fn error_of(stanzas: &str) -> Option<StreamErrorKind> {
    doc_error(&format!("{HEADER}{stanzas}")).await
}

/// The condition a whole stream document ends with, `None` if it closes cleanly.
async fn doc_error(doc: &str) -> Option<StreamErrorKind> {
    match read_all(doc, 4096, Limits::default()).await.1 {
        Some(ReadError::Stream { kind, .. }) => Some(kind),
        Some(other) => panic!("expected a stream error for {doc:?}, got {other:?}"),
        None => None,
    }
}

fn stanza(xml: &str) -> Element {
    parse_element(
        &format!(
            "<wrap xmlns='jabber:client' xmlns:stream='{}'>{xml}</wrap>",
            ns::STREAM
        ),
        &Limits::default(),
    )
    .unwrap()
    .children()
    .next()
    .unwrap()
    .clone()
}

const SESSION: &str = concat!(
    "<?xml version='1.0'?>",
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ",
    "xmlns:db='jabber:server:dialback' to='example.com' from='juliet@example.com' ",
    "id='s1' version='1.0' xml:lang='en'>\n",
    "<message to='romeo@example.net' id='m1' type='chat'><body>Art thou not Romeo?</body></message>\n",
    "  \t\r\n",
    "<c:presence xmlns:c='jabber:client'><c:show>away</c:show></c:presence>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>",
    "<db:result from='a.example' to='b.example'>key</db:result>",
    "<iq type='set' id='x'><x xmlns='urn:x'><y xmlns=''/></x></iq>",
    " ",
    "</stream:stream>",
);

#[tokio::test]
async fn header_comes_first_with_its_attributes() {
    let (events, err) = read_all(SESSION, 4096, Limits::default()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        events[0],
        StreamEvent::Header(StreamHeader {
            to: Some("example.com".into()),
            from: Some("juliet@example.com".into()),
            id: Some("s1".into()),
            version: Some("1.0".into()),
            lang: Some("en".into()),
            default_ns: ns::CLIENT.into(),
        })
    );
}

#[tokio::test]
async fn stanzas_get_namespaces_from_stream_prefixes_and_nested_declarations() {
    let (events, _) = read_all(SESSION, 4096, Limits::default()).await;
    let s = stanzas(&events);
    assert_eq!(s.len(), 5);
    assert!(s[0].is("message", ns::CLIENT));
    assert_eq!(
        s[0].get_child("body", ns::CLIENT).unwrap().text(),
        "Art thou not Romeo?"
    );
    assert!(s[1].is("presence", ns::CLIENT));
    assert!(s[1].get_child("show", ns::CLIENT).is_some());
    let query = s[2].get_child("query", ns::ROSTER).unwrap();
    assert_eq!(
        query.get_child("item", ns::ROSTER).unwrap().attr("jid"),
        Some("a@b")
    );
    assert!(s[3].is("result", ns::DIALBACK));
    assert_eq!(s[3].text(), "key");
    let x = s[4].get_child("x", "urn:x").unwrap();
    assert!(x.get_child("y", "").is_some());
    assert_eq!(events.last(), Some(&StreamEvent::Closed));
}

#[tokio::test]
async fn any_chunking_gives_the_same_events() {
    let (whole, _) = read_all(SESSION, usize::MAX, Limits::default()).await;
    for chunk in [1, 2, 3, 5, 7, 13, 64, 1000] {
        let (events, err) = read_all(SESSION, chunk, Limits::default()).await;
        assert!(err.is_none(), "chunk {chunk}: {err:?}");
        assert_eq!(events, whole, "chunk {chunk}");
    }
}

#[tokio::test]
async fn each_stanza_is_returned_as_soon_as_it_is_complete() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut reader = StreamReader::new(server, Limits::default());
    client.write_all(HEADER.as_bytes()).await.unwrap();
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    for i in 0..100 {
        // The stream never ends: each stanza must come out without waiting for more.
        client
            .write_all(format!("<presence id='p{i}'/>   ").as_bytes())
            .await
            .unwrap();
        match reader.next().await {
            Ok(StreamEvent::Stanza(p)) => assert_eq!(p.attr("id"), Some(format!("p{i}").as_str())),
            other => panic!("{other:?}"),
        }
    }
    client.write_all(b"</stream:stream>").await.unwrap();
    assert!(matches!(reader.next().await, Ok(StreamEvent::Closed)));
    assert!(matches!(reader.next().await, Ok(StreamEvent::Closed)));
}

#[tokio::test]
async fn an_empty_stream_element_is_a_header_then_closed() {
    let input = format!(
        "<stream:stream xmlns:stream='{}' xmlns='jabber:server'/>",
        ns::STREAM
    );
    let (events, err) = read_all(&input, 3, Limits::default()).await;
    assert!(err.is_none());
    assert!(matches!(&events[0], StreamEvent::Header(h) if h.default_ns == ns::SERVER));
    assert_eq!(events[1], StreamEvent::Closed);
}

#[tokio::test]
async fn predefined_entities_character_references_and_cdata_become_text() {
    let input = format!(
        "{HEADER}<message id='a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;'><body>\
         x &amp; y &lt;z&gt; &quot;q&quot; &apos;a&apos; &#233;&#x1F600; <![CDATA[<raw> & stuff]]>!\
         </body></message>"
    );
    for chunk in [1, 4096] {
        let (events, _) = read_all(&input, chunk, Limits::default()).await;
        let m = stanzas(&events)[0].clone();
        assert_eq!(m.attr("id"), Some("a&b<>\"'AB"));
        let body = m.get_child("body", ns::CLIENT).unwrap();
        assert_eq!(body.text(), "x & y <z> \"q\" 'a' é😀 <raw> & stuff!");
        assert_eq!(body.nodes().len(), 1, "adjacent text is one node");
    }
}

#[tokio::test]
async fn line_endings_and_attribute_whitespace_are_normalized() {
    let m = stanza("<message id='a\tb\r\nc\rd&#10;e'><body>1\r\n2\r3&#13;</body></message>");
    assert_eq!(m.attr("id"), Some("a b c d\ne"));
    assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "1\n2\n3\r");
}

#[tokio::test]
async fn undeclared_entities_are_restricted_xml() {
    assert_eq!(
        error_of("<message><body>&nbsp;</body></message>").await,
        Some(StreamErrorKind::RestrictedXml)
    );
    assert_eq!(
        error_of("<message id='&lol;'/>").await,
        Some(StreamErrorKind::RestrictedXml)
    );
}

#[tokio::test]
async fn invalid_character_references_are_not_well_formed() {
    for r in [
        "&#0;",
        "&#x0;",
        "&#xD800;",
        "&#xFFFE;",
        "&#1114112;",
        "&#99999999999999;",
        "&#;",
        "&#x;",
        "&#xZ;",
        "&;",
    ] {
        for input in [
            format!("<message><body>{r}</body></message>"),
            format!("<message id='{r}'/>"),
        ] {
            assert_eq!(
                error_of(&input).await,
                Some(StreamErrorKind::NotWellFormed),
                "{input}"
            );
        }
    }
    for bad in [
        "<message><body>a & b</body></message>",
        "<message id='a&b'/>",
        "<message id='&amp'/>",
    ] {
        assert_eq!(
            error_of(bad).await,
            Some(StreamErrorKind::NotWellFormed),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_billion_laughs_document_is_refused_at_its_doctype() {
    let mut doc = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            "<!ENTITY lol{i} '{}'>",
            format!("&{prev};").repeat(10)
        ));
    }
    doc.push_str("]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol9;");
    let (events, err) = read_all(&doc, 4096, Limits::default()).await;
    assert!(events.is_empty());
    assert!(matches!(
        err,
        Some(ReadError::Stream {
            kind: StreamErrorKind::RestrictedXml,
            ..
        })
    ));
}

#[tokio::test]
async fn dtds_comments_and_processing_instructions_are_restricted_xml() {
    let root = format!(
        "<stream:stream xmlns:stream='{}' xmlns='jabber:client'>",
        ns::STREAM
    );
    for input in [
        format!("<!DOCTYPE stream>{root}"),
        format!("{root}<!DOCTYPE x>"),
        format!("{root}<!ENTITY x 'y'>"),
        format!("{root}<!ELEMENT x ANY>"),
        format!("<!-- hi -->{root}"),
        format!("{root}<!-- keepalive -->"),
        format!("{root}<message><body>a<!-- b --></body></message>"),
        format!("<?xml-stylesheet href='x'?>{root}"),
        format!("{root}<message><?php echo 1; ?></message>"),
        format!("{root}<?xml version='1.0'?>"),
        format!(" <?xml version='1.0'?>{root}"),
    ] {
        assert_eq!(
            doc_error(&input).await,
            Some(StreamErrorKind::RestrictedXml),
            "{input}"
        );
    }
    // The declaration at the very start is fine, with or without its optional parts.
    for decl in [
        "<?xml version='1.0'?>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone='yes'?>",
    ] {
        assert_eq!(
            doc_error(&format!("{decl}{root}</stream:stream>")).await,
            None,
            "{decl}"
        );
    }
}

#[tokio::test]
async fn a_declared_encoding_other_than_utf8_is_unsupported() {
    let input = format!(
        "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns:stream='{}'>",
        ns::STREAM
    );
    assert_eq!(
        doc_error(&input).await,
        Some(StreamErrorKind::UnsupportedEncoding)
    );
}

#[tokio::test]
async fn utf16_before_the_header_is_unsupported_and_bad_utf8_later_not_well_formed() {
    let mut utf16 = vec![0xFF, 0xFE];
    for c in "<stream:stream>".encode_utf16() {
        utf16.extend_from_slice(&c.to_le_bytes());
    }
    let mut reader = StreamReader::new(&utf16[..], Limits::default());
    assert_eq!(
        reader.next().await.unwrap_err().stream_error_kind(),
        Some(StreamErrorKind::UnsupportedEncoding)
    );

    let mut bad = HEADER.as_bytes().to_vec();
    bad.extend_from_slice(b"<message><body>\xC3\x28</body></message>");
    let mut reader = StreamReader::new(&bad[..], Limits::default());
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    assert_eq!(
        reader.next().await.unwrap_err().stream_error_kind(),
        Some(StreamErrorKind::NotWellFormed)
    );
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    for bad in [
        "<message></presence>",
        "<message><body></message></body>",
        "</message>",
        "<message id=x/>",
        "<message id/>",
        "<message id='1'type='chat'/>",
        "<message id='a<b'/>",
        "<message =''/>",
        "<message 1a='x'/>",
        "<message a:b:c='x'/>",
        "<1message/>",
        "< message/>",
        "<message/ >",
        "<message><body>]]></body></message>",
        "<message><body>\u{1}</body></message>",
        "<message id='\u{1}'/>",
        "<message xmlns:p=''/>",
        "<message xmlns:xml='urn:not-xml'/>",
        "<message xmlns:xmlns='urn:x'/>",
        "<message xmlns='http://www.w3.org/2000/xmlns/'/>",
        "<xmlns:message/>",
        "<message><![CDATA[x]]]></message><![if]]>",
    ] {
        assert_eq!(
            error_of(bad).await,
            Some(StreamErrorKind::NotWellFormed),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn undeclared_prefixes_are_bad_namespace_prefix() {
    assert_eq!(
        error_of("<foo:message/>").await,
        Some(StreamErrorKind::BadNamespacePrefix)
    );
    assert_eq!(
        error_of("<xml:message/>").await,
        Some(StreamErrorKind::BadNamespacePrefix)
    );
    assert_eq!(
        error_of("<message foo:id='1'/>").await,
        Some(StreamErrorKind::BadNamespacePrefix)
    );
    assert_eq!(
        doc_error("<stream:stream xmlns='jabber:client'>").await,
        Some(StreamErrorKind::BadNamespacePrefix)
    );
}

#[tokio::test]
async fn duplicate_attributes_are_not_well_formed() {
    assert_eq!(
        error_of("<message id='1' id='2'/>").await,
        Some(StreamErrorKind::NotWellFormed)
    );
    assert_eq!(
        error_of("<message xmlns:a='urn:x' xmlns:b='urn:x' a:id='1' b:id='2'/>").await,
        Some(StreamErrorKind::NotWellFormed)
    );
    assert_eq!(
        error_of("<message xmlns:a='urn:x' a:id='1' id='2'/></stream:stream>").await,
        None
    );
}

#[tokio::test]
async fn the_stream_element_must_be_stream_in_the_stream_namespace() {
    assert_eq!(
        doc_error("<stream:stream xmlns:stream='http://etherx.jabber.org/streamz'>").await,
        Some(StreamErrorKind::InvalidNamespace)
    );
    assert_eq!(
        doc_error("<message xmlns='jabber:client'/>").await,
        Some(StreamErrorKind::InvalidNamespace)
    );
    assert_eq!(
        doc_error("<stream:flow xmlns:stream='http://etherx.jabber.org/streams'>").await,
        Some(StreamErrorKind::BadFormat)
    );
}

#[tokio::test]
async fn only_whitespace_may_sit_between_stanzas() {
    assert_eq!(
        error_of("hello<message/>").await,
        Some(StreamErrorKind::BadFormat)
    );
    assert_eq!(
        error_of("<message/>&#65;").await,
        Some(StreamErrorKind::BadFormat)
    );
    assert_eq!(
        error_of("<message/>&#32;&#10;<message/></stream:stream>").await,
        None
    );
    assert_eq!(
        doc_error("junk<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>").await,
        Some(StreamErrorKind::NotWellFormed)
    );
}

#[tokio::test]
async fn a_100_mb_text_node_is_refused_after_about_the_limit() {
    let limits = Limits::default();
    let prefix = format!("{HEADER}<message><body>");
    let mut reader = StreamReader::new(Generator::new(&prefix, "a", 100 << 20), limits.clone());
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    let err = reader.next().await.unwrap_err();
    assert_eq!(
        err.stream_error_kind(),
        Some(StreamErrorKind::PolicyViolation),
        "{err}"
    );
    let pulled = reader.get_ref().pulled;
    assert!(
        pulled <= (prefix.len() + limits.max_stanza_bytes) as u64,
        "pulled {pulled}"
    );
}

#[tokio::test]
async fn a_100_mb_attribute_or_tag_is_refused_after_about_the_limit() {
    let limits = Limits::default();
    for (prefix, pattern) in [
        (format!("{HEADER}<message id='"), "x"),
        (format!("{HEADER}<message"), " a"),
        (format!("{HEADER}<m"), "m"),
        (format!("{HEADER}<message><!--"), "-"),
        (format!("{HEADER}<message><![CDATA["), "]"),
        (HEADER.to_owned(), " "),
        ("<stream:stream a='".to_owned(), "a"),
    ] {
        let mut reader =
            StreamReader::new(Generator::new(&prefix, pattern, 100 << 20), limits.clone());
        let err = loop {
            match reader.next().await {
                Ok(StreamEvent::Header(_)) => continue,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            err.stream_error_kind(),
            Some(StreamErrorKind::PolicyViolation),
            "{prefix}: {err}"
        );
        let pulled = reader.get_ref().pulled;
        assert!(
            pulled <= (prefix.len() + limits.max_stanza_bytes) as u64,
            "{prefix}: pulled {pulled}"
        );
    }
}

#[tokio::test]
async fn the_size_limit_is_exact_and_applies_to_each_stanza_separately() {
    let limits = Limits {
        max_stanza_bytes: 100,
        ..Limits::default()
    };
    let fits = format!("<message><body>{}</body></message>", "x".repeat(100 - 32));
    assert_eq!(fits.len(), 100);
    let too_big = format!("<message><body>{}</body></message>", "x".repeat(101 - 32));
    let header = format!(
        "<stream:stream xmlns:stream='{}' xmlns='jabber:client'>",
        ns::STREAM
    );
    let many = format!("{header}{}{STREAM_CLOSE}", format!("{fits}\n").repeat(50));
    let (events, err) = read_all(&many, 7, limits.clone()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(stanzas(&events).len(), 50);
    let (events, err) = read_all(&format!("{header}{fits}{too_big}"), 7, limits).await;
    assert_eq!(stanzas(&events).len(), 1);
    assert_eq!(
        err.unwrap().stream_error_kind(),
        Some(StreamErrorKind::PolicyViolation)
    );
}

#[tokio::test]
async fn ten_thousand_deep_nesting_is_refused_at_the_depth_limit() {
    let prefix = format!("{HEADER}<message>");
    let mut reader = StreamReader::new(
        Generator::new(&prefix, "<a>", 10_000 * 3),
        Limits::default(),
    );
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    let err = reader.next().await.unwrap_err();
    assert_eq!(
        err.stream_error_kind(),
        Some(StreamErrorKind::PolicyViolation)
    );
    // Refused at depth 33, long before the input ends: nothing deeper was ever read.
    assert!(reader.get_ref().pulled < (prefix.len() + 3 * 33 + 16 * 1024) as u64);
}

#[tokio::test]
async fn nesting_up_to_max_depth_is_accepted() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let ok = format!("{HEADER}<a><b><c><d/></c></b></a>{STREAM_CLOSE}");
    assert!(read_all(&ok, 1, limits.clone()).await.1.is_none());
    let deep = format!("{HEADER}<a><b><c><d><e/></d></c></b></a>");
    let err = read_all(&deep, 1, limits).await.1.unwrap();
    assert_eq!(
        err.stream_error_kind(),
        Some(StreamErrorKind::PolicyViolation)
    );
}

#[tokio::test]
async fn more_attributes_than_max_attrs_is_a_policy_violation() {
    let limits = Limits {
        max_attrs: 3,
        ..Limits::default()
    };
    let header = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='{}'>",
        ns::STREAM
    );
    let ok = format!("{header}<message a='1' b='2' xmlns:x='urn:x'/>{STREAM_CLOSE}");
    assert!(read_all(&ok, 5, limits.clone()).await.1.is_none());
    let over = format!("{header}<message a='1' b='2' c='3' d='4'/>");
    let err = read_all(&over, 5, limits).await.1.unwrap();
    assert_eq!(
        err.stream_error_kind(),
        Some(StreamErrorKind::PolicyViolation)
    );
    let many: String = (0..10_000).map(|i| format!(" a{i}=''")).collect();
    assert_eq!(
        error_of(&format!("<message{many}/>")).await,
        Some(StreamErrorKind::PolicyViolation)
    );
}

#[tokio::test]
async fn namespace_declarations_in_scope_are_bounded() {
    let decls = |n: usize| {
        (0..60)
            .map(|i| format!(" xmlns:p{n}x{i}='urn:{i}'"))
            .collect::<String>()
    };
    let ok = format!(
        "<message{}><a{}/></message></stream:stream>",
        decls(0),
        decls(1)
    );
    assert_eq!(error_of(&ok).await, None);
    let over = format!(
        "<message{}><a{}><b{}/></a></message>",
        decls(0),
        decls(1),
        decls(2)
    );
    assert_eq!(
        error_of(&over).await,
        Some(StreamErrorKind::PolicyViolation)
    );
}

#[tokio::test]
async fn after_a_stream_error_the_reader_keeps_returning_it() {
    let input = format!("{HEADER}<message><!-- x --></message><presence/>");
    let mut reader = StreamReader::new(Chunked::new(input, 3), Limits::default());
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    let first = reader.next().await.unwrap_err();
    for _ in 0..3 {
        let again = reader.next().await.unwrap_err();
        assert_eq!(again.stream_error_kind(), first.stream_error_kind());
        assert_eq!(again.to_string(), first.to_string());
    }
    assert_eq!(
        first.stream_error_xml().unwrap(),
        stream_error_xml(
            StreamErrorKind::RestrictedXml,
            Some("comments are not allowed (RFC 6120 section 11.1)")
        )
    );
}

#[tokio::test]
async fn a_peer_that_hangs_up_gives_eof() {
    for input in [
        String::new(),
        "<?xml version='1.0'?>".to_owned(),
        "<stream:str".to_owned(),
        HEADER.to_owned(),
        format!("{HEADER}<message><bo"),
        format!("{HEADER}<message id='ab"),
        format!("{HEADER}<message><body>some text"),
        format!("{HEADER}<message><body>&am"),
        format!("{HEADER}<message><!-- x"),
        format!("{HEADER}<message/>  "),
    ] {
        let (_, err) = read_all(&input, 2, Limits::default()).await;
        assert!(matches!(err, Some(ReadError::Eof)), "{input:?}: {err:?}");
    }
}

#[tokio::test]
async fn buffered_len_shows_bytes_sent_ahead_of_a_starttls() {
    let starttls = format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let mut reader = StreamReader::new(starttls.as_bytes(), Limits::default());
    assert!(matches!(reader.next().await, Ok(StreamEvent::Header(_))));
    assert!(matches!(reader.next().await, Ok(StreamEvent::Stanza(s)) if s.is("starttls", ns::TLS)));
    assert_eq!(reader.buffered_len(), 0);
    assert!(reader.into_inner().is_empty());

    let injected = format!("{starttls}<iq type='set'/>");
    let mut reader = StreamReader::new(injected.as_bytes(), Limits::default());
    reader.next().await.unwrap();
    assert!(matches!(reader.next().await, Ok(StreamEvent::Stanza(_))));
    assert_eq!(reader.buffered_len(), "<iq type='set'/>".len());
}

#[tokio::test]
async fn a_dropped_read_poisons_the_reader() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut reader = StreamReader::new(server, Limits::default());
    client.write_all(&HEADER.as_bytes()[..30]).await.unwrap();
    {
        let future = std::pin::pin!(reader.next());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.poll(&mut cx).is_pending());
    }
    client.write_all(&HEADER.as_bytes()[30..]).await.unwrap();
    let err = reader.next().await.unwrap_err();
    assert_eq!(
        err.stream_error_kind(),
        Some(StreamErrorKind::InternalServerError)
    );
}

#[tokio::test]
async fn parsed_stanzas_round_trip_through_to_xml() {
    let (events, _) = read_all(SESSION, 4096, Limits::default()).await;
    let originals: Vec<Element> = stanzas(&events).into_iter().cloned().collect();
    let mut again = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='{}'>",
        ns::STREAM
    );
    for s in &originals {
        again.push_str(&s.to_xml_in(ns::CLIENT));
    }
    let (events, _) = read_all(&again, 3, Limits::default()).await;
    assert_eq!(
        stanzas(&events).into_iter().cloned().collect::<Vec<_>>(),
        originals
    );
}

#[tokio::test]
async fn our_stream_header_parses_back() {
    let header = StreamHeader {
        to: Some("juliet@example.com".into()),
        from: Some("example.com".into()),
        id: Some("i'd<&>".into()),
        version: Some("1.0".into()),
        lang: Some("en".into()),
        default_ns: ns::CLIENT.into(),
    };
    let xml = format!(
        "{}{}{STREAM_CLOSE}",
        stream_header_xml(&header),
        stream_error_xml(StreamErrorKind::Conflict, Some("x"))
    );
    let (events, err) = read_all(&xml, 4096, Limits::default()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events[0], StreamEvent::Header(header));
    let error = stanzas(&events)[0];
    assert!(error.is("error", ns::STREAM));
    assert!(error.get_child("conflict", ns::STREAMS).is_some());
}

#[test]
fn parse_element_refuses_trailing_content() {
    assert!(Element::from_xml("  <a/>  ").is_ok());
    assert!(Element::from_xml("<a/><b/>").is_err());
    assert!(Element::from_xml("<a/>text").is_err());
    assert!(matches!(Element::from_xml("<a>"), Err(ReadError::Eof)));
    assert!(Element::from_xml("<a></a></a>").is_err());
}

/// A deterministic mini-fuzzer: mutations of valid streams, each fed whole and in small
/// chunks. Nothing may panic, and every stanza that comes out must serialize to XML that
/// parses back to the same tree. (`fuzz/` runs the same check with coverage guidance.)
#[tokio::test]
async fn mutated_streams_never_panic_and_stanzas_round_trip() {
    let seeds = [
        SESSION.to_owned(),
        format!("{HEADER}<message id='a&amp;b'><body>x &#x1F600; <![CDATA[y]]></body></message>"),
        format!("{HEADER}<iq xmlns:p='urn:p' p:a='1'><q xmlns='urn:q' xml:lang='de'>t</q></iq>"),
    ];
    let alphabet: &[u8] = b"<>/='\"&;:#x![]-? \r\nabAZ09\xC3\xA9\x00\xFF";
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let limits = Limits {
        max_stanza_bytes: 512,
        max_depth: 6,
        max_attrs: 6,
    };
    for _ in 0..3000 {
        let mut input = seeds[(next() % 3) as usize].as_bytes().to_vec();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % input.len();
            match next() % 3 {
                0 => input[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    input.remove(at);
                }
                _ => input.insert(at, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        for chunk in [input.len().max(1), 1 + (next() % 5) as usize] {
            let mut reader = StreamReader::new(Chunked::new(input.clone(), chunk), limits.clone());
            for _ in 0..64 {
                match reader.next().await {
                    Ok(StreamEvent::Stanza(s)) => {
                        let back =
                            Element::from_xml(&s.to_xml()).expect("serialized stanza parses");
                        assert_eq!(back, s);
                    }
                    Ok(StreamEvent::Header(_)) => {}
                    Ok(StreamEvent::Closed) | Err(_) => break,
                }
            }
        }
    }
}

#[test]
fn reader_and_its_read_future_can_move_to_a_spawned_task() {
    fn assert_send<T: Send>(_: &T) {}
    let mut reader = StreamReader::new(tokio::io::empty(), Limits::default());
    assert_send(&reader.next());
    assert_send(&reader);
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<ReadError>();
}
