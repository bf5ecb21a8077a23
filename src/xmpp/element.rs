//! A namespace-resolved XML element tree: what a stanza is once parsed.
//!
//! Prefixes are not kept. An element carries the namespace name it resolved to, and
//! serialization writes a default-namespace declaration (`xmlns='...'`) wherever an
//! element's namespace differs from its parent's, which is the minimal set of
//! declarations for a tree whose elements use no prefixes.
//!
//! Attribute names take one of three forms:
//! - `name`: an attribute in no namespace (almost all XMPP attributes);
//! - `xml:name`: an attribute in the XML namespace (`xml:lang`), whose prefix is fixed
//!   by the XML specification;
//! - `{uri}name`: an attribute in any other namespace (Clark notation). The serializer
//!   declares a generated prefix for it on the element that carries it.
//!
//! Names are not validated: build elements from names that are valid XML, and never in
//! the XML or XMLNS namespaces (the parser refuses such input, so parsed trees comply).
//! [`Element::from_xml`], defined beside the stream reader, parses one back.

use std::fmt;

use super::chars::{push_attr, push_text};
use super::ns;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// An element with attributes already checked for duplicates, in canonical form.
    pub(crate) fn from_parts(name: &str, ns: String, attrs: Vec<(String, String)>) -> Element {
        Element {
            name: name.to_owned(),
            ns,
            attrs,
            nodes: Vec::new(),
        }
    }

    /// Sets an attribute, replacing an earlier value of the same name.
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    pub fn with_child(mut self, child: Element) -> Element {
        self.append_child(child);
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.append_text(text);
        self
    }

    /// The local name (no prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name; empty for an element in no namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Moves the element to another namespace, e.g. a stanza relayed from a
    /// `jabber:client` stream to a `jabber:server` one. Children keep theirs.
    pub fn set_ns(&mut self, ns: impl Into<String>) {
        self.ns = ns.into();
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The attribute's value; see the module documentation for how names are written.
    pub fn attr(&self, name: &str) -> Option<&str> {
        let name = canonical_attr_name(name);
        self.attrs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_attr_name(name);
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name.into_owned(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let name = canonical_attr_name(name);
        let pos = self.attrs.iter().position(|(k, _)| *k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// Attributes in document (or insertion) order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Child elements, skipping text.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.nodes.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Children and text in document order. Adjacent text is always one node.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The first child with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|c| c.is(name, ns))
    }

    /// Removes and returns the first child with this name and namespace.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let pos = self
            .nodes
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.nodes.remove(pos) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    pub fn append_child(&mut self, child: Element) {
        self.nodes.push(Node::Element(child));
    }

    /// Appends text, merging it into a preceding text node so that equal documents
    /// give equal trees however their text was split.
    pub fn append_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.nodes.last_mut() {
            Some(Node::Text(t)) => t.push_str(&text),
            _ => self.nodes.push(Node::Text(text)),
        }
    }

    pub(crate) fn append_char(&mut self, c: char) {
        match self.nodes.last_mut() {
            Some(Node::Text(t)) => t.push(c),
            _ => self.nodes.push(Node::Text(c.to_string())),
        }
    }

    /// The direct text children, concatenated (text of descendants is not included).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// Serializes as a standalone document fragment: the root declares its namespace.
    pub fn to_xml(&self) -> String {
        self.to_xml_in("")
    }

    /// Serializes for a stream whose default namespace is `parent_ns` (a stanza on a
    /// `jabber:client` stream is written without `xmlns`).
    pub fn to_xml_in(&self, parent_ns: &str) -> String {
        let mut out = String::with_capacity(128);
        self.write(&mut out, parent_ns);
        out
    }

    fn write(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            push_attr(out, &self.ns);
            out.push('\'');
        }
        // Namespaced attributes get prefixes declared right here, so the element reads
        // the same wherever it is later moved.
        let mut prefixed: Vec<&str> = Vec::new();
        for (key, _) in &self.attrs {
            if let Some((uri, _)) = split_clark(key) {
                if !prefixed.contains(&uri) {
                    out.push_str(&format!(" xmlns:ns{}='", prefixed.len()));
                    push_attr(out, uri);
                    out.push('\'');
                    prefixed.push(uri);
                }
            }
        }
        for (key, value) in &self.attrs {
            out.push(' ');
            match split_clark(key) {
                Some((uri, local)) => {
                    let index = prefixed.iter().position(|u| *u == uri).unwrap_or(0);
                    out.push_str(&format!("ns{index}:{local}"));
                }
                None => out.push_str(key),
            }
            out.push_str("='");
            push_attr(out, value);
            out.push('\'');
        }
        if self.nodes.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for node in &self.nodes {
            match node {
                Node::Element(child) => child.write(out, &self.ns),
                Node::Text(text) => push_text(out, text),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml())
    }
}

/// `{uri}local` → `(uri, local)`.
fn split_clark(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix('{')?.split_once('}')
}

/// The XML namespace has a fixed prefix, so `{http://www.w3.org/XML/1998/namespace}lang`
/// and `xml:lang` must name the same attribute.
fn canonical_attr_name(name: &str) -> std::borrow::Cow<'_, str> {
    match split_clark(name) {
        Some((uri, local)) if uri == ns::XML => format!("xml:{local}").into(),
        _ => name.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stream::parse_element;

    fn message() -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("to", "juliet@example.com")
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
    }

    #[test]
    fn builder_accessors_and_attribute_replacement() {
        let mut m = message();
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(m.attr("to"), Some("juliet@example.com"));
        m.set_attr("to", "romeo@example.net");
        assert_eq!(m.attrs().count(), 2);
        assert_eq!(m.attr("to"), Some("romeo@example.net"));
        assert_eq!(m.remove_attr("type"), Some("chat".to_owned()));
        assert_eq!(m.attr("type"), None);
        assert_eq!(
            m.get_child("body", ns::CLIENT).map(|b| b.text()),
            Some("hi".into())
        );
        assert!(m.get_child("body", ns::SERVER).is_none());
        m.get_child_mut("body", ns::CLIENT)
            .unwrap()
            .append_text(" there");
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "hi there");
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().nodes().len(), 1);
        assert!(m.remove_child("body", ns::CLIENT).is_some());
        assert_eq!(m.children().count(), 0);
    }

    #[test]
    fn xml_lang_is_one_attribute_whichever_way_it_is_named() {
        let mut e = Element::new("body", ns::CLIENT).with_attr("xml:lang", "en");
        assert_eq!(
            e.attr("{http://www.w3.org/XML/1998/namespace}lang"),
            Some("en")
        );
        e.set_attr("{http://www.w3.org/XML/1998/namespace}lang", "de");
        assert_eq!(e.attrs().collect::<Vec<_>>(), vec![("xml:lang", "de")]);
    }

    #[test]
    fn text_concatenates_direct_text_only() {
        let e = Element::new("a", "")
            .with_text("one ")
            .with_child(Element::new("b", "").with_text("inner"))
            .with_text("two");
        assert_eq!(e.text(), "one two");
    }

    #[test]
    fn to_xml_escapes_text_and_attribute_values() {
        let e = Element::new("body", ns::CLIENT)
            .with_attr("id", "a&b<c>d\"e'f")
            .with_text("1 < 2 && 3 > 2 \"q\" 'a' ]]>");
        assert_eq!(
            e.to_xml(),
            "<body xmlns='jabber:client' id='a&amp;b&lt;c&gt;d&quot;e&apos;f'>\
             1 &lt; 2 &amp;&amp; 3 &gt; 2 \"q\" 'a' ]]&gt;</body>"
        );
    }

    #[test]
    fn to_xml_writes_minimal_namespace_declarations() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_child(
                Element::new("query", ns::DISCO_INFO)
                    .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::PING)),
            )
            .with_child(Element::new("error", ns::CLIENT))
            .with_child(Element::new("nons", ""));
        assert_eq!(
            iq.to_xml(),
            "<iq xmlns='jabber:client' type='result'>\
             <query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:ping'/></query>\
             <error/><nons xmlns=''/></iq>"
        );
        assert_eq!(
            iq.to_xml_in(ns::CLIENT),
            "<iq type='result'>\
             <query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:ping'/></query>\
             <error/><nons xmlns=''/></iq>"
        );
        assert_eq!(Element::new("x", "").to_xml(), "<x/>");
        assert_eq!(Element::new("x", "").to_xml_in(ns::CLIENT), "<x xmlns=''/>");
    }

    #[test]
    fn namespaced_attributes_get_declared_prefixes() {
        let e = Element::new("item", "urn:a")
            .with_attr("{urn:b}x", "1")
            .with_attr("plain", "2")
            .with_attr("{urn:b}y", "3")
            .with_attr("{urn:c}x", "4")
            .with_attr("xml:lang", "en");
        let xml = e.to_xml();
        assert_eq!(
            xml,
            "<item xmlns='urn:a' xmlns:ns0='urn:b' xmlns:ns1='urn:c' \
             ns0:x='1' plain='2' ns0:y='3' ns1:x='4' xml:lang='en'/>"
        );
        assert_eq!(Element::from_xml(&xml).unwrap(), e);
    }

    #[test]
    fn serialized_elements_parse_back_to_equal_trees() {
        let tricky = "\t tab, newline\n, cr\r, crlf\r\n, quotes \"' & <> ]]> \u{1F600} \u{0}";
        let e = Element::new("message", ns::CLIENT)
            .with_attr("id", tricky)
            .with_attr("xml:lang", "en")
            .with_child(
                Element::new("body", ns::CLIENT)
                    .with_text(tricky)
                    .with_child(Element::new("x", "urn:x").with_child(Element::new("y", "")))
                    .with_text("tail"),
            );
        let back = Element::from_xml(&e.to_xml()).unwrap();
        // U+0000 cannot be carried by XML; it comes back as U+FFFD.
        let fixed = tricky.replace('\u{0}', "\u{FFFD}");
        assert_eq!(back.attr("id"), Some(fixed.as_str()));
        assert_eq!(
            back.get_child("body", ns::CLIENT).unwrap().text(),
            format!("{fixed}tail")
        );
        let again = Element::from_xml(&back.to_xml()).unwrap();
        assert_eq!(again, back);
        // And inside a stream whose default namespace is jabber:client.
        let in_stream = parse_element(
            &format!(
                "<wrap xmlns='{}'>{}</wrap>",
                ns::CLIENT,
                back.to_xml_in(ns::CLIENT)
            ),
            &crate::xmpp::stream::Limits::default(),
        )
        .unwrap();
        assert_eq!(in_stream.get_child("message", ns::CLIENT), Some(&back));
    }
}
