# FaceFix's menu (menu.py runs in GUI sessions): Nodes > FaceFix > FaceFix creates the FaceFix gizmo.
import facefix_nuke

facefix_nuke.add_menu()
