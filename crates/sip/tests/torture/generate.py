#!/usr/bin/env python3
"""Writes the torture-test datagrams (one .sip file each) and EXPECTED.

Messages written for Orbit after the descriptions in RFC 4475 (SIP torture tests); "\\n" becomes
CRLF. EXPECTED lists: name, whether the parser accepts it (ok/err), and what the daemon answers
(a status code, or "none" for responses and unanswerable input).
Run from this directory: python3 generate.py
"""
T = {}


def m(name, parse, daemon, text, raw_tail=b""):
    T[name] = (parse, daemon, text.replace("\n", "\r\n").encode() + raw_tail)


def L(b):
    return str(len(b.replace("\n", "\r\n").encode()))


sdp = "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"

# ---- RFC 4475 3.1.1: valid messages
m("wsinv", "ok", "481",  # it carries a To tag: in-dialog, no such dialog
  "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
  "TO :\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
  "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8\n"
  "MaX-fOrWaRdS: 0068\n"
  "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
  "Content-Length   : " + L(sdp) + "\n"
  "cseq: 0009\n  INVITE\n"
  "Via  : SIP  /   2.0\n /UDP\n    192.0.2.2;branch=390skdjuw\n"
  "s :\n"
  "NewFangledHeader:   newfangled value\n continued newfangled value\n"
  "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
  "Content-Type: application/sdp\n"
  "Route:\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
  "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n  branch  =   z9hG4bK9ikj8  ,\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n z9hG4bK30239\n"
  "m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\n newvalue ;\n  secondparam ; q = 0.33\n\n" + sdp)

m("intmeth", "ok", "501",
  "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
  "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
  "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\n"
  "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439\";tag=_token~1'+`*%!-.\n"
  "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
  "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\n"
  "Max-Forwards: 255\n"
  "extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb\n"
  "Content-Length: 0\n\n")

m("esc01", "ok", "404",
  "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
  "To: sip:%75se%72@example.com\n"
  "From: <sip:I%20have%20spaces@example.net>;tag=938\n"
  "Max-Forwards: 87\n"
  "i: esc01.239409asdfakjkn23onasd0-3234\n"
  "CSeq: 234234 INVITE\n"
  "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
  "C: application/sdp\n"
  "Contact:\n <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("escnull", "ok", "404",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: sip:null-%00-null@example.com\n"
  "From: sip:null-%00-null@example.com;tag=839923423\n"
  "Max-Forwards: 70\n"
  "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\n"
  "CSeq: 14398234 REGISTER\n"
  "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
  "Contact: <sip:%00@host5.example.com>\n"
  "Contact: <sip:%00%00@host5.example.com>\n"
  "L:0\n\n")

m("esc02", "ok", "501",
  "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
  "To: \"%Z%45\" <sip:resource@example.com>\n"
  "From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23\n"
  "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\n"
  "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\n"
  "CSeq: 29344 RE%47IST%45R\n"
  "Max-Forwards: 70\n"
  "Contact: <sip:alias1@host1.example.com>\n"
  "C%6Fntact: <sip:alias2@host2.example.com>\n"
  "Contact: <sip:alias3@host3.example.com>\n"
  "l: 0\n\n")

m("lwsdisp", "ok", "200",
  "OPTIONS sip:user@example.com SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: caller<sip:caller@example.com>;tag=323\n"
  "Max-Forwards: 70\n"
  "Call-ID: lwsdisp.1234abcd@funky.example.com\n"
  "CSeq: 60 OPTIONS\n"
  "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\n"
  "l: 0\n\n")

long = "very" * 100
vias = "".join("Via: SIP/2.0/TCP sip" + str(i) + ".example.com;branch=z9hG4bK" + "d" * 40 + "\n" for i in range(30))
m("longreq", "ok", "404",
  "INVITE sip:user@example.com SIP/2.0\n"
  "To: \"I have a user name of " + long + " long\" <sip:" + long + "@example.com>\n"
  "From: sip:amazinglylongcallername" + long + "@example.net;tag=12982424;unknownheaderparam" + long + "=unknowheaderparamvalue" + long + ";unknownValueless" + long + "\n"
  "Call-ID: longreq.onereallyreallyreallyreallylongcallid" + "really" * 50 + "\n"
  "CSeq: 3882340 INVITE\n"
  "Unknown-" + long + "-Long-Name: unknown-" + long + "-long-value; unknown-" + long + "-long-parameter-name = unknown-" + long + "-long-parameter-value\n"
  + vias +
  "Max-Forwards: 70\n"
  "Contact: <sip:amazinglylongcallername" + long + "@host5.example.net>\n"
  "Content-Type: application/sdp\n"
  "l: " + L(sdp) + "\n\n" + sdp)

inv_tail = ("INVITE sip:joe@example.com SIP/2.0\nTo: sip:joe@example.com\nFrom: sip:caller@example.net;tag=141334\n"
            "Max-Forwards: 8\nCall-ID: dblreq.0ha0isndaksdj99sdfafnl3lk233412\nCSeq: 8 INVITE\n"
            "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234\nContent-Type: application/sdp\nContent-Length: "
            + L(sdp) + "\n\n" + sdp).replace("\n", "\r\n").encode()
m("dblreq", "ok", "401",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: sip:1001@example.com\n"
  "From: sip:1001@example.com;tag=8983\n"
  "Call-ID: dblreq.0ha0isndaksdj99sdfafnl3lk233412\n"
  "CSeq: 8 REGISTER\n"
  "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKdbl\n"
  "Max-Forwards: 70\n"
  "Contact: <sip:1001@192.0.2.2>\n"
  "Content-Length: 0\n\n", inv_tail)

m("semiuri", "ok", "200",
  "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\n"
  "To: sip:j_user@example.com\n"
  "From: sip:caller@example.org;tag=33242\n"
  "Max-Forwards: 3\n"
  "Call-ID: semiuri.0ha0isndaksdj\n"
  "CSeq: 8 OPTIONS\n"
  "Accept: application/sdp, application/pkcs7-mime,\n multipart/mixed, multipart/signed,\n message/sip, message/sipfrag\n"
  "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\n"
  "l: 0\n\n")

m("transports", "ok", "200",
  "OPTIONS sip:user@example.com SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: <sip:caller@example.com>;tag=323\n"
  "Max-Forwards: 70\n"
  "Call-ID:  transports.kijh4akdnaqjkwendsasfdj\n"
  "Accept: application/sdp\n"
  "CSeq: 60 OPTIONS\n"
  "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
  "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
  "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
  "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
  "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\n"
  "l: 0\n\n")

mp = ("--7a9cbec02ceef655\nContent-Type: text/plain\nContent-Transfer-Encoding: binary\n\nHello\n"
      "--7a9cbec02ceef655\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n0123456789\n--7a9cbec02ceef655--\n")
m("mpart01", "ok", "405",
  "MESSAGE sip:kumiko@example.org SIP/2.0\n"
  "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\n"
  "Max-Forwards: 70\n"
  "Route: <sip:127.0.0.1:5080>\n"
  "Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuL\n"
  "Call-ID: mpart01.0ha0isnda977644900765@192.0.2.15\n"
  "CSeq: 1 MESSAGE\n"
  "From: <sip:kumiko@example.org>;tag=5cda\n"
  "To: <sip:kumiko@example.org>\n"
  "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\n"
  "Content-Length: " + L(mp) + "\n\n" + mp)

m("unreason", "ok", "none",
  "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e\n"
  "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
  "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\n"
  "CSeq: 35 INVITE\n"
  "From: sip:user@example.com;tag=11141343\n"
  "To: sip:user@example.edu;tag=2229\n"
  "Content-Length: 0\n\n")

m("noreason", "ok", "none",
  "SIP/2.0 100 \n"
  "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
  "Call-ID: noreason.asndj203insdf99223ndf\n"
  "CSeq: 35 INVITE\n"
  "From: <sip:user@example.com>;tag=39ansfi3\n"
  "To: <sip:user@example.edu>;tag=902jndnke3\n"
  "Content-Length: 0\n\n")

# ---- RFC 4475 3.1.2: invalid messages
m("badinv01", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=134161461246\n"
  "Max-Forwards: 7\n"
  "Call-ID: badinv01.0ha0isndaksdjasdf3234nas\n"
  "CSeq: 8 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.15;;,;,,\n"
  "Contact: \"Joe\" <sip:joe@example.org>;;;;\n"
  "Content-Length: 0\n\n")

m("clerr", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "Max-Forwards: 80\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=93942939o2\n"
  "Contact: <sip:caller@hungry.example.net>\n"
  "Call-ID: clerr.0ha0isndaksdjweiafasdk3\n"
  "CSeq: 8 INVITE\n"
  "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\n"
  "Content-Type: application/sdp\n"
  "Content-Length: 9999\n\n" + sdp)

m("ncl", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "Max-Forwards: 254\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=32394234\n"
  "Call-ID: ncl.0ha0isndaksdj2193423r542w35\n"
  "CSeq: 0 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\n"
  "Contact: <sip:caller@example53.example.net>\n"
  "Content-Type: application/sdp\n"
  "Content-Length: -999\n\n" + sdp)

m("scalar02", "err", "400",
  "REGISTER sip:example.com SIP/2.0\n"
  "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\n"
  "To: <sip:user@example.com>\n"
  "From: <sip:user@example.com>;tag=239232jh3\n"
  "CSeq: 36893488147419103232 REGISTER\n"
  "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\n"
  "Max-Forwards: 300\n"
  "Expires: " + "1" + "0" * 100 + "\n"
  "Contact: <sip:user@host129.example.com>\n  ;expires=280297596632815\n"
  "Content-Length: 0\n\n")

m("scalarlg", "err", "none",
  "SIP/2.0 503 Service Unavailable\n"
  "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\n"
  "To: <sip:user@example.com>\n"
  "From: <sip:other@example.net>;tag=2easdjfejw\n"
  "CSeq: 9292394834772304023312 OPTIONS\n"
  "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\n"
  "Retry-After: 949302838503028349304023988\n"
  "Warning: 1812 overture \"In Progress\"\n"
  "Content-Length: 0\n\n")

m("quotbal", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "To: \"Mr. J. User <sip:j.user@example.com>\n"
  "From: sip:caller@example.net;tag=93334\n"
  "Max-Forwards: 10\n"
  "Call-ID: quotbal.aksdj\n"
  "Contact: <sip:caller@host59.example.net>\n"
  "CSeq: 8 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("ltgtruri", "err", "400",
  "INVITE <sip:user@example.com> SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=39291\n"
  "Max-Forwards: 23\n"
  "Call-ID: ltgtruri.1@192.0.2.5\n"
  "CSeq: 1 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.5\n"
  "Contact: <sip:caller@host5.example.net>\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("lwsruri", "err", "400",
  "INVITE sip:user@example.com; lr SIP/2.0\n"
  "To: sip:user@example.com;tag=3xfe-9921883-z9f\n"
  "From: sip:caller@example.net;tag=231413434\n"
  "Max-Forwards: 5\n"
  "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\n"
  "CSeq: 2130706432 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\n"
  "Contact: <sip:caller@host1.example.net>\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("lwsstart", "err", "400",
  "INVITE  sip:user@example.com  SIP/2.0\n"
  "Max-Forwards: 8\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=8814\n"
  "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\n"
  "CSeq: 1893884 INVITE\n"
  "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\n"
  "Contact: <sip:caller@host1.example.net>\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("trws", "err", "400",
  "OPTIONS sip:remote-target@example.com SIP/2.0  \n"
  "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093\n"
  "To: <sip:remote-target@example.com>\n"
  "From: <sip:local-resource@example.com>;tag=329429089\n"
  "Call-ID: trws.oicu34958239neffasdhr2345r\n"
  "Accept: application/sdp\n"
  "CSeq: 238923 OPTIONS\n"
  "Max-Forwards: 70\n"
  "Content-Length: 0\n\n")

m("escruri", "err", "400",
  "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=341518\n"
  "Max-Forwards: 7\n"
  "Contact: <sip:caller@host39923.example.net>\n"
  "Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5\n"
  "CSeq: 149209342 INVITE\n"
  "Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("baddate", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=2234923\n"
  "Max-Forwards: 70\n"
  "Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234\n"
  "CSeq: 1392934 INVITE\n"
  "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
  "Date: Fri, 01 Jan 2010 16:00:00 EST\n"
  "Contact: <sip:caller@host5.example.net>\n"
  "Content-Type: application/sdp\n"
  "Content-Length: " + L(sdp) + "\n\n" + sdp)

m("regbadct", "err", "400",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:user@example.com;tag=998332\n"
  "Max-Forwards: 70\n"
  "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\n"
  "CSeq: 1 REGISTER\n"
  "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\n"
  "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\n"
  "l: 0\n\n")

m("badaspec", "err", "400",
  "OPTIONS sip:user@example.org SIP/2.0\n"
  "Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\n"
  "Max-Forwards: 70\n"
  "From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423\n"
  "To: \"Watson, Thomas\" < sip:t.watson@example.org >\n"
  "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\n"
  "Accept: application/sdp\n"
  "CSeq: 3923239 OPTIONS\n"
  "l: 0\n\n")

m("baddn", "err", "400",
  "OPTIONS sip:t.watson@example.org SIP/2.0\n"
  "Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\n"
  "Max-Forwards:      70\n"
  "From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43\n"
  "To:      Watson, Thomas <sip:t.watson@example.org>\n"
  "Call-ID: baddn.31415@c.example.com\n"
  "Accept: application/sdp\n"
  "CSeq:    3923239 OPTIONS\n"
  "l: 0\n\n")

m("badvers", "err", "505",
  "OPTIONS sip:t.watson@example.org SIP/7.0\n"
  "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\n"
  "Max-Forwards:     70\n"
  "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\n"
  "To:      T. Watson <sip:t.watson@example.org>\n"
  "Call-ID: badvers.31417@c.example.com\n"
  "CSeq:    1 OPTIONS\n"
  "l: 0\n\n")

m("mismatch01", "err", "400",
  "OPTIONS sip:user@example.com SIP/2.0\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=34525\n"
  "Max-Forwards: 6\n"
  "Call-ID: mismatch01.dj0234sxdfl3\n"
  "CSeq: 8 INVITE\n"
  "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
  "l: 0\n\n")

m("mismatch02", "err", "400",
  "NEWMETHOD sip:user@example.com SIP/2.0\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=34525\n"
  "Max-Forwards: 6\n"
  "Call-ID: mismatch02.dj0234sxdfl3\n"
  "CSeq: 8 INVITE\n"
  "Contact: <sip:caller@host.example.net>\n"
  "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\n"
  "Content-Type: application/sdp\n"
  "l: " + L(sdp) + "\n\n" + sdp)

m("bigcode", "err", "none",
  "SIP/2.0 4294967301 better not break the receiver\n"
  "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
  "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\n"
  "CSeq: 353494 INVITE\n"
  "From: <sip:user@example.com>;tag=39ansfi3\n"
  "To: <sip:user@example.edu>;tag=902jndnke3\n"
  "Content-Length: 0\n"
  "Contact: <sip:user@host105.example.com>\n\n")

# ---- RFC 4475 3.3 and 3.4: transaction layer and application semantics
m("insuf", "err", "400",
  "INVITE sip:user@example.com SIP/2.0\n"
  "CSeq: 193942 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\n"
  "Content-Type: application/sdp\n"
  "l: " + L(sdp) + "\n\n" + sdp)

m("unkscm", "ok", "416",
  "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=384\n"
  "Max-Forwards: 3\n"
  "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34\n"
  "CSeq: 3923423 OPTIONS\n"
  "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
  "Content-Length: 0\n\n")

m("novelsc", "ok", "416",
  "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\n"
  "To: sip:user@example.com\n"
  "From: sip:caller@example.net;tag=384\n"
  "Max-Forwards: 3\n"
  "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34\n"
  "CSeq: 3923423 OPTIONS\n"
  "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
  "Content-Length: 0\n\n")

m("unksm2", "ok", "404",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: isbn:2983792873\n"
  "From: <http://www.example.com>;tag=3234233\n"
  "Call-ID: unksm2.daksdj@hyphenated-host.example.com\n"
  "CSeq: 234902 REGISTER\n"
  "Max-Forwards: 70\n"
  "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\n"
  "Contact: <name:John_Smith>\n"
  "l: 0\n\n")

m("bext01", "ok", "420",
  "OPTIONS sip:user@example.com SIP/2.0\n"
  "To: sip:j_user@example.com\n"
  "From: sip:caller@example.net;tag=242etr\n"
  "Max-Forwards: 6\n"
  "Call-ID: bext01.0ha0isndaksdj\n"
  "Require: nothingSupportsThis, nothingSupportsThisEither\n"
  "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\n"
  "CSeq: 8 OPTIONS\n"
  "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw\n"
  "Content-Length: 0\n\n")

ut = "<audio>\n <pcmu port=\"443\"/>\n</audio>\n"
m("invut", "ok", "415",
  "INVITE sip:1002@example.com SIP/2.0\n"
  "Contact: <sip:caller@host5.example.net>\n"
  "To: sip:j.user@example.com\n"
  "From: sip:caller@example.net;tag=8392034\n"
  "Max-Forwards: 70\n"
  "Call-ID: invut.0ha0isndaksdjadsfij34n23d\n"
  "CSeq: 235448 INVITE\n"
  "Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw\n"
  "Content-Type: application/unknownformat\n"
  "Content-Length: " + L(ut) + "\n\n" + ut)

m("regaut01", "ok", "401",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: sip:1001@example.com\n"
  "From: sip:1001@example.com;tag=8983\n"
  "Max-Forwards: 70\n"
  "Call-ID: regaut01.0ha0isndaksdj\n"
  "CSeq: 9338 REGISTER\n"
  "Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw\n"
  "Authorization: NoOneKnowsThisScheme opaque-data=here\n"
  "Content-Length:0\n\n")

m("multi01", "err", "400",
  "INVITE sip:user@company.com SIP/2.0\n"
  "Contact: <sip:caller@host25.example.net>\n"
  "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\n"
  "Max-Forwards: 70\n"
  "CSeq: 5 INVITE\n"
  "Call-ID: multi01.98asdh@192.0.2.1\n"
  "CSeq: 59 INVITE\n"
  "Call-ID: multi01.98asdh@192.0.2.2\n"
  "From: sip:caller@example.com;tag=3413415\n"
  "To: sip:user@example.com\n"
  "To: sip:other@example.net\n"
  "From: sip:caller@example.net;tag=2923420123\n"
  "Content-Type: application/sdp\n"
  "l: " + L(sdp) + "\n\n" + sdp)

m("mcl01", "err", "400",
  "OPTIONS sip:user@example.com SIP/2.0\n"
  "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\n"
  "To: sip:user@example.com\n"
  "From: sip:other@example.net;tag=3923942\n"
  "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\n"
  "CSeq: 15932 OPTIONS\n"
  "Content-Length: 13\n"
  "Max-Forwards: 60\n"
  "Content-Length: 5\n"
  "Content-Type: text/plain\n\n"
  "There's no way to know how many octets are supposed to be here.\n")

m("bcast", "ok", "none",
  "SIP/2.0 200 OK\n"
  "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
  "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\n"
  "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\n"
  "CSeq: 35 INVITE\n"
  "From: sip:user@example.com;tag=11141343\n"
  "To: sip:user@example.edu;tag=2229\n"
  "Content-Length: " + L(sdp) + "\n"
  "Content-Type: application/sdp\n"
  "Contact: <sip:user@host28.example.com>\n\n" + sdp)

m("zeromf", "ok", "483",
  "INVITE sip:1002@example.com SIP/2.0\n"
  "Call-ID: zeromf.3e4a2c9c@192.0.2.10\n"
  "CSeq: 39234321 INVITE\n"
  "From: <sip:caller@example.net>;tag=3ghg4i\n"
  "To: <sip:1002@example.com>\n"
  "Max-Forwards: 0\n"
  "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKkdjuw\n"
  "Content-Length: 0\n\n")

m("cparam01", "ok", "401",
  "REGISTER sip:example.com SIP/2.0\n"
  "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
  "Max-Forwards: 70\n"
  "From: sip:1001@example.com;tag=88ffdd\n"
  "To: sip:1001@example.com\n"
  "Call-ID: cparam01.70710@saturn.example.com\n"
  "CSeq: 1 REGISTER\n"
  "Contact: sip:+19725552222@gw1.example.net;unknownparam\n"
  "l: 0\n\n")

m("cparam02", "ok", "401",
  "REGISTER sip:example.com SIP/2.0\n"
  "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
  "Max-Forwards: 70\n"
  "From: sip:1001@example.com;tag=88ffdd\n"
  "To: sip:1001@example.com\n"
  "Call-ID: cparam02.70710@saturn.example.com\n"
  "CSeq: 3 REGISTER\n"
  "Contact: <sip:+19725552222@gw1.example.net;unknownparam>\n"
  "l: 0\n\n")

m("regescrt", "ok", "401",
  "REGISTER sip:example.com SIP/2.0\n"
  "To: sip:1001@example.com\n"
  "From: sip:1001@example.com;tag=8\n"
  "Max-Forwards: 70\n"
  "Call-ID: regescrt.k345asrl3fdbv@192.0.2.1\n"
  "CSeq: 14398234 REGISTER\n"
  "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
  "M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>\n"
  "L:0\n\n")

m("sdp01", "ok", "404",
  "INVITE sip:user@example.com SIP/2.0\n"
  "To: sip:j_user@example.com\n"
  "Contact: <sip:caller@host15.example.net>\n"
  "From: sip:caller@example.net;tag=234\n"
  "Max-Forwards: 5\n"
  "Call-ID: sdp01.ndaksdj9342dasdd\n"
  "Accept: text/nobodyKnowsThis\n"
  "CSeq: 8 INVITE\n"
  "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw\n"
  "Content-Length: " + L(sdp) + "\n"
  "Content-Type: application/sdp\n\n" + sdp)

m("inv2543", "ok", "404",
  "INVITE sip:UserB@example.com SIP/2.0\n"
  "Via: SIP/2.0/UDP 192.0.2.2\n"
  "From: <sip:UserA@example.com>\n"
  "To: <sip:UserB@example.com>\n"
  "Call-ID: inv2543.12345601@here.example.com\n"
  "CSeq: 1 INVITE\n"
  "Contact: <sip:UserA@192.0.2.2>\n"
  "Content-Length: 0\n\n")

with open("EXPECTED", "w") as f:
    f.write("# name parse daemon: written by generate.py after RFC 4475's descriptions\n")
    for name, (p, d, data) in T.items():
        with open(name + ".sip", "wb") as out:
            out.write(data)
        f.write(f"{name} {p} {d}\n")
print(len(T), "messages")
