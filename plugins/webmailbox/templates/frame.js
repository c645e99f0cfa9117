// Sizes the frame that shows a message's HTML part to its content. The
// page works without it (the frame then has a fixed, resizable height):
// the frame's document, sandboxed without same-origin access, posts its
// height; only a message from that frame's own window is taken.
addEventListener("message", function (e) {
	var f = document.querySelector("iframe.html");
	if (!f || e.source !== f.contentWindow || !e.data) {
		return;
	}
	var h = e.data.posthornFrameHeight;
	if (typeof h === "number" && h > 0 && h < 1000000) {
		f.style.height = Math.ceil(h) + 2 + "px";
	}
});
