; Tether's Windows installer (per machine). Built by packaging/windows/build.py, which passes:
;   VERSION (x.y.z), STAGE (the folder to install: python\ with the runtime, wheels and wintun.dll; bin\),
;   OUTFILE, and SIGN_COMMAND only when a code-signing certificate is configured.
; What it does, and what the uninstaller undoes, is listed in the README's "### Windows" install section.

Unicode true
!include MUI2.nsh
!include LogicLib.nsh
!include x64.nsh
!include WinVer.nsh

!ifndef VERSION | STAGE | OUTFILE
  !error "build.py defines VERSION, STAGE and OUTFILE"
!endif

!define SERVICE "tether-helper"
!define GROUP "tether"
!define PRODUCT_KEY "Software\Tether"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Tether"
; The tray's own autostart switch (tether.gui.autostart) reads and writes this same value.
!define RUN_KEY "Software\Microsoft\Windows\CurrentVersion\Run"
!define RUN_VALUE "Tether"
!define PYTHONW "$INSTDIR\python\pythonw.exe"
!define TRAY_COMMAND '"${PYTHONW}" -m tether.gui'

Name "Tether ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\Tether"
RequestExecutionLevel admin
; build.py --fast (the build test) trades size for time with zlib.
!ifndef COMPRESSOR
  !define COMPRESSOR "/SOLID lzma"
!endif
SetCompressor ${COMPRESSOR}
ShowInstDetails show
ShowUninstDetails show
VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "Tether"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "Tether installer"
VIAddVersionKey "LegalCopyright" "Apache-2.0"

!ifdef SIGN_COMMAND
  ; Authenticode on the installer and on the uninstaller it writes (packaging/windows/sign.py).
  !finalize '${SIGN_COMMAND} "%1"' = 0
  !uninstfinalize '${SIGN_COMMAND} "%1"' = 0
!endif

!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP "Tether needs 64-bit Windows (x64); this is 32-bit Windows." /SD IDOK
    Abort
  ${EndIf}
  ${IfNot} ${IsNativeAMD64}
    MessageBox MB_ICONSTOP "Tether needs an x64 (AMD64) processor; its runtime and Wintun driver are built for x64 only." /SD IDOK
    Abort
  ${EndIf}
  ${IfNot} ${AtLeastWin10}
    MessageBox MB_ICONSTOP "Tether needs Windows 10 or later (its DNS and network cmdlets and Wintun need them)." /SD IDOK
    Abort
  ${EndIf}
  SetRegView 64
FunctionEnd

; Run a command, log its output, leave the exit code in $0.
!macro Run COMMAND
  nsExec::ExecToLog '${COMMAND}'
  Pop $0
!macroend

Section "Tether (helper service, command line, tray)" SecMain
  SectionIn RO
  SetShellVarContext all
  ; An upgrade: the running helper holds files under python\.
  !insertmacro Run '"$SYSDIR\sc.exe" stop ${SERVICE}'
  Sleep 2000

  SetOutPath "$INSTDIR"
  File /r "${STAGE}\*.*"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  ; The helper's runtime folder (journal, logs, state): only SYSTEM and Administrators may write there,
  ; because the helper, as LocalSystem, undoes whatever a journal found there names.
  CreateDirectory "$APPDATA\Tether"
  !insertmacro Run '"$SYSDIR\icacls.exe" "$APPDATA\Tether" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F *S-1-5-32-545:(OI)(CI)RX'

  ; The local group whose members may use the helper (its named pipe's DACL names it).
  !insertmacro Run '"$SYSDIR\net.exe" localgroup ${GROUP}'
  ${If} $0 != 0
    !insertmacro Run '"$SYSDIR\net.exe" localgroup ${GROUP} /add /comment:"May use the Tether helper"'
    ${If} $0 != 0
      Abort "Could not create the local group ${GROUP} (net localgroup exited $0)."
    ${EndIf}
    WriteRegDWORD HKLM "${PRODUCT_KEY}" "CreatedGroup" 1
  ${EndIf}
  ; The installing user (exit 2 when already a member). The elevated installer runs as that user unless
  ; another account's credentials were given at the UAC prompt: then that account is added.
  ReadEnvStr $R0 USERDOMAIN
  ReadEnvStr $R1 USERNAME
  !insertmacro Run '"$SYSDIR\net.exe" localgroup ${GROUP} "$R0\$R1" /add'
  DetailPrint "Added $R0\$R1 to ${GROUP}: sign out and in again before using Tether."

  ; The helper as a service under LocalSystem (tether.helper.root.winservice speaks to the SCM).
  ; Byte code compiled here rather than shipped: half the download, and Program Files is not writable later.
  !insertmacro Run '"$INSTDIR\python\python.exe" -m compileall -q "$INSTDIR\python\Lib\site-packages"'

  !insertmacro Run '"$SYSDIR\sc.exe" delete ${SERVICE}'
  !insertmacro Run '"$SYSDIR\sc.exe" create ${SERVICE} binPath= "\"$INSTDIR\python\python.exe\" -m tether.helper.root.winservice" start= auto obj= LocalSystem DisplayName= "Tether helper"'
  ${If} $0 != 0
    Abort "Could not register the ${SERVICE} service (sc create exited $0)."
  ${EndIf}
  !insertmacro Run '"$SYSDIR\sc.exe" description ${SERVICE} "Tether: routes, DNS and the tunnel for one Kubernetes cluster connection"'
  ; A killed helper's NRPT rules (cluster domains only) and suffix-list entry outlive it: the SCM restarts it
  ; after 1 s and its start-up cleanup removes them (issue 16). failureflag 1: a non-zero exit counts too.
  !insertmacro Run '"$SYSDIR\sc.exe" failure ${SERVICE} reset= 86400 actions= restart/1000/restart/1000/restart/60000'
  !insertmacro Run '"$SYSDIR\sc.exe" failureflag ${SERVICE} 1'
  !insertmacro Run '"$SYSDIR\sc.exe" start ${SERVICE}'

  CreateDirectory "$SMPROGRAMS\Tether"
  CreateShortcut "$SMPROGRAMS\Tether\Tether.lnk" "${PYTHONW}" "-m tether.gui" "" "" SW_SHOWNORMAL "" "Tether tray"
  CreateShortcut "$SMPROGRAMS\Tether\Uninstall Tether.lnk" "$INSTDIR\uninstall.exe"

  WriteRegStr HKLM "${PRODUCT_KEY}" "InstallDir" "$INSTDIR"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayName" "Tether"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "Publisher" "Tether"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKLM "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section /o "Start the tray when I sign in" SecAutostart
  WriteRegStr HKCU "${RUN_KEY}" "${RUN_VALUE}" '${TRAY_COMMAND}'
SectionEnd

Section "Uninstall"
  SetRegView 64
  SetShellVarContext all
  !insertmacro Run '"$SYSDIR\sc.exe" stop ${SERVICE}'
  ; The helper undoes its session as it stops; wait for that (up to 60 s) before removing its files.
  StrCpy $1 0
  ${Do}
    nsExec::ExecToStack '"$SYSDIR\sc.exe" query ${SERVICE}'
    Pop $0
    Pop $2
    ${If} $0 != 0
    ${OrIf} $2 == ""
      ${Break}
    ${EndIf}
    Push $2
    Push "STOPPED"
    Call un.Contains
    Pop $3
    ${If} $3 == 1
    ${OrIf} $1 >= 60
      ${Break}
    ${EndIf}
    Sleep 1000
    IntOp $1 $1 + 1
  ${Loop}
  ; Whatever a crashed helper left behind (routes, NRPT rules, a stray adapter), as on Linux before removal.
  !insertmacro Run '"$INSTDIR\python\python.exe" -m tether.helper.user.cli.main helper cleanup --journal "$APPDATA\Tether\journal.json"'
  !insertmacro Run '"$SYSDIR\sc.exe" delete ${SERVICE}'

  ReadRegDWORD $0 HKLM "${PRODUCT_KEY}" "CreatedGroup"
  ${If} $0 == 1
    !insertmacro Run '"$SYSDIR\net.exe" localgroup ${GROUP} /delete'
  ${EndIf}

  DeleteRegValue HKCU "${RUN_KEY}" "${RUN_VALUE}"
  RMDir /r "$SMPROGRAMS\Tether"
  RMDir /r "$INSTDIR\python"
  RMDir /r "$INSTDIR\bin"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  RMDir /r "$APPDATA\Tether"
  DeleteRegKey HKLM "${UNINSTALL_KEY}"
  DeleteRegKey HKLM "${PRODUCT_KEY}"
SectionEnd

; Push haystack, push needle; pops 1 when the needle occurs in the haystack, else 0.
Function un.Contains
  Exch $R1 ; needle
  Exch
  Exch $R2 ; haystack
  Push $R3
  Push $R4
  Push $R5
  StrLen $R3 $R1
  StrCpy $R4 0
  StrCpy $R5 0
  ${Do}
    StrCpy $R0 $R2 $R3 $R4
    ${If} $R0 == ""
      ${Break}
    ${EndIf}
    ${If} $R0 == $R1
      StrCpy $R5 1
      ${Break}
    ${EndIf}
    IntOp $R4 $R4 + 1
  ${Loop}
  StrCpy $R1 $R5
  Pop $R5
  Pop $R4
  Pop $R3
  Pop $R2
  Exch $R1
FunctionEnd
